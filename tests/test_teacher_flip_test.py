"""--teacher-flip-test (issue 33, item 5): the teachers' cached predictions as the flip test's, the
mean over each crop and its mirror with left and right points swapped back.

The teacher here is a hand-made network that finds the one bright pixel of the crop and puts point
i at that pixel plus a fixed offset o_i. On the mirror image the pixel sits at (S - 1 - x, y); mirrored
back and re-indexed with the flip permutation p, point i lands at (x - o_p(i),x , y + o_p(i),y). The
flip test is the mean of the two, computed here by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

import keras
from keras import ops

import configuration as C
import image_utility as iu
import student_trainer
from errors import ConfigError

SIZE = 16
OFFSETS = np.array([[-3.0, 1.0], [2.0, -1.0], [0.5, 2.5], [4.0, 0.0]], np.float32)  # o_i, crop pixels
PERM = [1, 0, 2, 3]          # points 0 and 1 a left/right pair; 2 and 3 on the mid-line


def bright_pixel_teacher(offsets=OFFSETS, size=SIZE) -> keras.Model:
    """Point i at the intensity-weighted centre of channel 0 plus offsets[i], in normalised
    coordinates v = (S/2 - c) / S (image_utility.normalize_landmarks)."""
    xs = np.tile(np.arange(size, dtype=np.float32), (size, 1))
    ys = xs.T.copy()

    def locate(img):
        w = img[..., 0]
        total = ops.sum(w, axis=(1, 2))
        cx = ops.sum(w * xs, axis=(1, 2)) / total
        cy = ops.sum(w * ys, axis=(1, 2)) / total
        pts_x = cx[:, None] + offsets[None, :, 0]
        pts_y = cy[:, None] + offsets[None, :, 1]
        pts = ops.stack([pts_x, pts_y], axis=-1)            # (B, N, 2) crop pixels
        return ops.reshape((size / 2.0 - pts) / size, (-1, 2 * len(offsets)))

    inp = keras.Input((size, size, 3))
    return keras.Model(inp, keras.layers.Lambda(locate)(inp))


def one_bright_pixel(x: int, y: int, size=SIZE) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[y, x] = 255
    return img


def expected_flip_test(x: float, y: float) -> np.ndarray:
    plain = np.array([x, y], np.float32) + OFFSETS
    back = np.stack([x - OFFSETS[PERM, 0], y + OFFSETS[PERM, 1]], axis=-1)
    return iu.normalize_landmarks(0.5 * (plain + back), SIZE).reshape(-1)


def test_flip_test_predictions_match_the_hand_computed_mean():
    teacher = bright_pixel_teacher()
    images = np.stack([one_bright_pixel(3, 5), one_bright_pixel(11, 2), one_bright_pixel(7, 12)])
    got = student_trainer.flip_test_predictions(teacher, images, PERM, batch_size=2)
    want = np.stack([expected_flip_test(3, 5), expected_flip_test(11, 2), expected_flip_test(7, 12)])
    assert got.shape == (3, 2 * len(OFFSETS))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # not the plain prediction: the offsets are not mirror-symmetric, so the flip test moves them
    plain = iu.normalize_landmarks(np.array([3.0, 5.0]) + OFFSETS, SIZE).reshape(-1)
    assert np.abs(got[0] - plain).max() > 0.05


def test_a_mirror_symmetric_teacher_is_unchanged_by_the_flip_test():
    sym = np.array([[-3.0, 1.0], [3.0, 1.0], [0.0, 2.0], [0.0, -2.0]], np.float32)   # 0 <-> 1 mirrored
    teacher = bright_pixel_teacher(sym)
    images = np.stack([one_bright_pixel(4, 9)])
    got = student_trainer.flip_test_predictions(teacher, images, PERM)
    # the pixel's mirror centre is (S-1)/2, so a centred pixel keeps every point in place
    centred = np.stack([one_bright_pixel(7, 9)])
    centred_img = centred.astype(np.float32)
    centred_img[0, 9, 8] = 255                                   # the centre 7.5 between two pixels
    got_c = student_trainer.flip_test_predictions(teacher, centred_img.astype(np.uint8), PERM)
    plain_c = iu.normalize_landmarks(np.array([7.5, 9.0]) + sym, SIZE).reshape(-1)
    np.testing.assert_allclose(got_c[0], plain_c, atol=1e-5)
    assert got.shape == (1, 8)


class _Data:
    """The slice of training.TrainData that cached_teacher_predictions reads."""

    def __init__(self, images, info):
        self.images, self.info, self.size = images, info, len(images)
        self.cfg = C.TrainConfig(input_size=SIZE)
        self.prepared_dir = "."
        self.train = type("T", (), {"manifest": {"created": "x", "train_aug": None}})()

    def pool_key(self):
        return "pool"

    def pool_images(self, idx):
        return self.images[idx]


def _info(flip_pairs):
    return C.DatasetInfo(name="four", num_points=4, flip_pairs=flip_pairs, interocular=((0,), (1,)),
                         interpupil=((0,), (1,)), train_splits=(), test_subsets={}, aug_copies=0,
                         official_format="custom", download="")


def test_cache_keys_the_flip_test_and_refuses_a_layout_without_flip_pairs(tmp_path):
    teacher = bright_pixel_teacher()
    images = np.stack([one_bright_pixel(3, 5), one_bright_pixel(11, 2)])
    data = _Data(images, _info(((0, 1),)))
    path = tmp_path / "teacher.keras"
    path.write_bytes(b"a teacher file")             # the cache key reads its size and mtime only
    plain = student_trainer.cached_teacher_predictions(tmp_path, "tough", teacher, path, data, verbose=0)
    flipped = student_trainer.cached_teacher_predictions(tmp_path, "tough", teacher, path, data,
                                                         verbose=0, flip_test=True)
    np.testing.assert_allclose(flipped[0], expected_flip_test(3, 5), atol=1e-5)
    assert np.abs(flipped - plain).max() > 0.05    # the plain cache was not reused
    assert json.loads((tmp_path / "teacher_cache" / "tough.json").read_text())["flip_test"] is True
    again = student_trainer.cached_teacher_predictions(tmp_path, "tough", teacher, path, data, verbose=0)
    np.testing.assert_allclose(again, plain, atol=1e-6)  # and back: the flip cache is not reused
    with pytest.raises(ConfigError, match="flip pairs"):
        student_trainer.cached_teacher_predictions(tmp_path, "tough", teacher, path,
                                                   _Data(images, _info(())), verbose=0, flip_test=True)


def test_demo_names_flip_test_students_and_passes_the_flag():
    import demo

    assert demo.student_name("kd", "code", True) == "kd-flip"
    assert demo.student_name("kd", "paper", True) == "kd-paper-flip"
    assert demo.student_name("l1", "paper", True) == "l1"          # no teachers: neither applies
    assert demo.student_name("tough-only", "code", False) == "tough-only"
    args = demo.build_parser().parse_args(["--teacher-flip-test"])
    assert args.teacher_flip_test is True
