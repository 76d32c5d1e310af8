"""data_util.py's pure helpers value by value (issue 37 item 3, mutmut's survivors): the seeded
face split, WFLW's oversampling counts, prepare's disk estimate, the face box and its refusals, the
settings change named, a custom name refused, an older prepared folder recognised, the free-space
check, the dataset a manifest names. Fast: no prepare run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import configuration as C
import data_util as du
import dataset_formats as fmt
from errors import ConfigError, DataFormatError


@pytest.mark.parametrize("n,frac,max_faces,n_train,n_val", [
    (100, 0.05, None, 95, 5), (100, 0.0, None, 100, 0), (1, 0.5, None, 1, 0), (2, 0.01, None, 1, 1),
    (2, 0.99, None, 1, 1), (10, 0.25, None, 8, 2), (10, 0.35, None, 6, 4), (100, 0.1, 20, 18, 2), (100, 0.1, 0, 1, 0),
    (5, 0.1, 50, 4, 1), (3, 0.5, None, 1, 2),
])
def test_split_sizes(n, frac, max_faces, n_train, n_val):
    train, val = du.split_faces(n, frac, 3, max_faces)
    assert (len(train), len(val)) == (n_train, n_val)
    together = np.concatenate([train, val])
    assert sorted(together.tolist()) == list(range(n_train + n_val))            # whole faces, no repeat
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())


def test_split_is_the_seeded_permutation():
    train, val = du.split_faces(40, 0.25, 5)
    perm = np.random.default_rng([5, 7919]).permutation(40)
    assert val.tolist() == sorted(perm[:10].tolist()) and train.tolist() == sorted(perm[10:].tolist())
    assert du.split_faces(40, 0.25, 6)[1].tolist() != val.tolist()


def test_copies_per_face_with_wflw_oversampling():
    info = C.DATASETS["wflw"]
    attrs = [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 1, 1], None, [0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0]]
    got = du.copies_per_face(info, attrs, 3)
    assert got.dtype == np.int64
    assert got.tolist() == [3 + 20, 3 + 7 + 8 + 2, 3, 3 + 2 + 2, 3 + 20 + 7 + 2 + 2 + 8 + 2, 3]
    assert du.copies_per_face(info, attrs, 3, oversample=False).tolist() == [3] * 6
    assert du.copies_per_face(C.DATASETS["300w"], [None, [1] * 6], 2).tolist() == [2, 2]   # no table


def test_prepare_disk_estimate_by_hand():
    face = 64 * 64 * 3
    small = 2 * 68 * 2 * 4 + 3 * 4 + 1024
    assert du._prepare_bytes([10], 64, 68) == 2 * 10 * face + 10 * small + (1 << 20)
    # train (100) then test (10): the peak is train's double copy, test's comes after train is done
    assert du._prepare_bytes([100, 10], 64, 68) == 2 * 100 * face + 110 * small + (1 << 20)
    assert du._prepare_bytes([10, 100], 64, 68) == (10 + 2 * 100) * face + 110 * small + (1 << 20)
    assert du._mib(3 * 2 ** 20) == "3.0 MiB" and du._mib(1536 * 2 ** 20) == "1,536.0 MiB"


def _sample(pts, box=None):
    return fmt.Sample(id="s", image_path="", landmarks_px=np.asarray(pts, np.float32),
                      box_xywh=None if box is None else np.asarray(box, np.float32))


def test_face_box_from_landmarks_or_the_dataset():
    pts = [[10, 20], [50, 20], [30, 60]]
    cfg = C.PrepareConfig(margin=0.5)
    assert du._face_box(_sample(pts), cfg, "w") == (30 - 30.0, 40 - 30.0, 60.0)       # 1.5 x 40
    cfg = C.PrepareConfig(box="dataset", margin=0.0)
    assert du._face_box(_sample(pts, [0, 0, 100, 80]), cfg, "w") == (0.0, -10.0, 100.0)
    assert du._face_box(_sample(pts), cfg, "w") == (10.0, 20.0, 40.0)               # no box: landmarks
    assert du._face_box(_sample([[0, 0], [4, 0]]), C.PrepareConfig(margin=0.0), "w") == (0.0, -2.0, 4.0)


@pytest.mark.parametrize("pts,box,why", [
    ([[5, 5], [5, 5]], None, "w: the landmarks span only 0 px (the points coincide); fix the annotation"),
    ([[5, 5], [8.9, 5]], None, "w: the landmarks span only 3.9 px (the points coincide); fix the annotation"),
    ([[0, 0], [10, 10]], [0, 0, 3.5, 3], "w: the dataset's face box is 3.5x3 px; fix the box in the "
                                         "annotation or use --box landmarks"),
    ([[0, 0], [10, 10]], [0, 0, np.nan, 9], "w: the dataset's face box is nanx9 px; fix the box in the "
                                            "annotation or use --box landmarks"),
])
def test_face_box_refusals(pts, box, why):
    with pytest.raises(DataFormatError) as err:
        du._face_box(_sample(pts, box), C.PrepareConfig(box="dataset"), "w")
    assert str(err.value) == why


def test_a_dataset_box_of_four_pixels_is_enough():
    assert du._face_box(_sample([[0, 0], [10, 10]], [1, 2, 4, 1]), C.PrepareConfig(box="dataset", margin=0.0),
                        "w") == (1.0, 0.5, 4.0)


def test_config_change_names_the_first_difference():
    assert du._config_change({"margin": 0.25, "box": "landmarks"}, {"margin": 0.4, "box": "dataset"}) == \
        "box 'landmarks', now 'dataset'"
    assert du._config_change({"a": 1}, {"a": 1}) == "same settings"
    assert du._config_change(None, {"a": 1}) == "a None, now 1"
    assert du._config_change({"a": 1, "b": 2}, {"a": 1}) == "b 2, now None"


@pytest.mark.parametrize("name", ["mine", "my-set_2.v1", "A1"])
def test_plain_custom_names(name):
    du._check_custom_name(C.PrepareConfig(custom_spec="s.json"), C.DatasetInfo.from_spec(
        {"name": name, "num_points": 2, "interocular": [[0], [1]]}))


@pytest.mark.parametrize("name,why", [
    ("a/b", "must be a plain name"), (".hidden", "must be a plain name"), ("a b", "must be a plain name"),
    ("", "must be a plain name"),
    ("x-synthetic", "would share the embedded data's prepared folder (x-synthetic-64)"),
    ("cofw-synthetic-v2", "would share the embedded data's prepared folder (cofw-synthetic-v2-64)"),
])
def test_custom_names_refused(name, why):
    info = C.DatasetInfo.from_spec({"name": "tmp", "num_points": 2, "interocular": [[0], [1]]})
    info = info.__class__(**{**info.__dict__, "name": name})
    with pytest.raises(ConfigError) as err:
        du._check_custom_name(C.PrepareConfig(custom_spec="s.json", input_size=64), info)
    assert str(err.value).startswith(f"s.json: name {name!r} ") and why in str(err.value)
    assert str(err.value).endswith("; change \"name\" in the spec")


def test_an_older_prepared_folder_is_recognised(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"dataset": "300w", "counts": {"train": 3}}))
    (d / "train").mkdir()
    assert du.looks_prepared(d)
    (d / "notes.txt").write_text("mine")
    assert not du.looks_prepared(d)                                            # a user's file: not ours
    (d / "notes.txt").unlink()
    for manifest in ('{"counts": {}}', '{"dataset": "300w", "counts": 3}', "[1]", "{oops", '"x"'):
        (d / "manifest.json").write_text(manifest)
        assert not du.looks_prepared(d), manifest
    (d / "manifest.json").unlink()
    assert not du.looks_prepared(d)


def test_free_space_check(tmp_path):
    du.check_free_space(tmp_path / "not" / "yet", 1, "prepare", "free some")    # nearest existing parent
    with pytest.raises(du.NoSpaceError) as err:
        du.check_free_space(tmp_path, 1 << 62, "prepare", "free some space")
    msg = str(err.value)
    assert msg.startswith(f"no space left on {tmp_path}: prepare needs about 4,398,046,511,104.0 MiB, ")
    assert msg.endswith(" MiB free; free some space")


def test_the_dataset_a_manifest_names(tmp_path):
    assert du.dataset_of_manifest({"dataset": "cofw"}) is C.DATASETS["cofw"]
    spec = {"name": "five", "num_points": 2, "interocular": [[0], [1]]}
    assert du.dataset_of_manifest({"dataset": "five", "dataset_spec": spec}).num_points == 2
    p = tmp_path / "s.json"
    p.write_text(json.dumps({**spec, "num_points": 3}))
    assert du.dataset_of_manifest({"dataset": "five", "config": {"custom_spec": str(p)}}).num_points == 3
    with pytest.raises(ConfigError) as err:
        du.dataset_of_manifest({"dataset": "five", "dataset_spec": {**spec, "num_points": 0}})
    assert str(err.value).startswith('manifest.json "dataset_spec": num_points 0')


# ---------------------------------------------------------------------------- mutmut's survivors


def test_prepare_disk_estimate_of_three_splits_and_of_none():
    face, small = 64 * 64 * 3, 2 * 68 * 2 * 4 + 3 * 4 + 1024
    # the third split's double copy comes after both earlier splits are done
    assert du._prepare_bytes([10, 10, 10], 64, 68) == (10 + 10 + 2 * 10) * face + 30 * small + (1 << 20)
    assert du._prepare_bytes([], 64, 68) == 1 << 20 and du._prepare_bytes([0, 0], 64, 68) == 1 << 20


def test_coinciding_points_far_from_the_origin_are_refused():
    with pytest.raises(DataFormatError, match="span only 0.5 px"):
        du._face_box(_sample([[100, 300], [100.5, 300.5]]), C.PrepareConfig(), "w")


def test_the_face_extent_is_measured_in_float64():
    # 2 - 2**-23 minus -2 is 4 - 2**-23: below the 4-pixel minimum, though float32 rounds it to 4.0
    pts = np.array([[-2.0, 0.0], [2 - 2.0 ** -23, 0.0]], np.float32)
    assert np.ptp(pts[:, 0]) == np.float32(4.0)
    with pytest.raises(DataFormatError, match="span only 4 px"):
        du._face_box(_sample(pts), C.PrepareConfig(), "w")


def test_a_dataset_box_given_as_a_row():
    smp = fmt.Sample(id="s", image_path="", landmarks_px=np.array([[0, 0], [10, 10]], np.float32),
                     box_xywh=np.array([[1, 2, 4, 1]], np.float32))
    assert du._face_box(smp, C.PrepareConfig(box="dataset", margin=0.0), "w") == (1.0, 0.5, 4.0)


@pytest.mark.parametrize("name", ["300w-synthetic-x", "wflw-synthetic-x"])
def test_every_embedded_datasets_folder_is_refused(name):
    info = C.DatasetInfo.from_spec({"name": "tmp", "num_points": 2, "interocular": [[0], [1]]})
    info = info.__class__(**{**info.__dict__, "name": name})
    with pytest.raises(ConfigError, match="would share the embedded data's prepared folder"):
        du._check_custom_name(C.PrepareConfig(custom_spec="s.json", input_size=64), info)


def test_an_older_prepared_folder_with_every_part_and_a_large_manifest(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for name in ("train", "test", "train_aug"):
        (d / name).mkdir()
    for name in ("prepare_config.json", "asm.npz"):
        (d / name).write_text("")
    (d / "manifest.json").write_text(json.dumps({"dataset": "300w", "counts": {"train": 3}}))
    assert set(du.folder_contents(d)) == du.PREPARED_NAMES and du.looks_prepared(d)
    # only the first 4 MiB of a manifest are read: a 6 MiB one is not a manifest prepare wrote
    (d / "manifest.json").write_text(json.dumps({"dataset": "300w", "counts": {}, "pad": "x" * (6 << 20)}))
    assert not du.looks_prepared(d)


def test_free_space_probes_the_nearest_existing_folder(tmp_path, monkeypatch):
    import shutil

    probed = []

    def usage(path):
        probed.append(Path(path))
        return shutil._ntuple_diskusage(2000, 1000, 1000)

    monkeypatch.setattr(du.shutil, "disk_usage", usage)
    du.check_free_space(tmp_path / "not" / "yet", 1000, "prepare", "free some")    # exactly enough
    du.check_free_space(tmp_path, 1000, "prepare", "free some")
    assert probed == [tmp_path, tmp_path]
    with pytest.raises(du.NoSpaceError) as err:
        du.check_free_space(tmp_path / "x", 1001, "prepare", "free some")
    assert str(err.value) == f"no space left on {tmp_path / 'x'}: prepare needs about 0.0 MiB, 0.0 MiB free; free some"


# ---------------------------------------------------------------------------- _prepare_split


def _split_inputs(tmp_path, images, paths=None, pts=None):
    info = C.DatasetInfo.from_spec({"name": "three", "num_points": 3, "interocular": [[0], [1]]})
    pts = np.array([[10, 10], [30, 10], [20, 30]], np.float32) if pts is None else pts
    samples = [fmt.Sample(id=f"f{k}", image_path="" if paths is None else str(paths[k]), landmarks_px=pts,
                          box_xywh=None, image=img) for k, img in enumerate(images)]
    return samples, C.PrepareConfig(input_size=16, margin=0.0, root=str(tmp_path)), info


def test_prepare_split_keeps_each_in_memory_image_and_decodes_a_shared_file_once(tmp_path, monkeypatch):
    import cv2

    faces = [np.full((40, 40, 3), v, np.uint8) for v in (0, 200)]             # COFW: images in memory, no path
    samples, cfg, info = _split_inputs(tmp_path, faces)
    assert du._prepare_split(samples, tmp_path / "mem", cfg, info, True, [], False) == 2
    crops = np.load(tmp_path / "mem" / "images.npy")
    assert crops[0].max() == 0 and crops[1].min() == 200
    path = tmp_path / "two faces.png"
    cv2.imwrite(str(path), np.full((40, 40, 3), 90, np.uint8))
    loads = []
    monkeypatch.setattr(du, "load_image", lambda smp: loads.append(smp.id) or fmt.load_image(smp))
    samples, cfg, info = _split_inputs(tmp_path, [None, None], paths=[path, path])
    assert du._prepare_split(samples, tmp_path / "file", cfg, info, True, [], False) == 2
    assert loads == ["f0"] and np.load(tmp_path / "file" / "images.npy").min() == 90


def test_prepare_split_into_a_new_nested_or_an_existing_folder(tmp_path):
    samples, cfg, info = _split_inputs(tmp_path, [np.zeros((40, 40, 3), np.uint8)])
    out = tmp_path / "a" / "b" / "train"
    for _ in range(2):
        assert du._prepare_split(samples, out, cfg, info, True, [], False) == 1
    assert sorted(p.name for p in out.iterdir()) == ["crop_boxes.npy", "images.npy", "landmarks.npy",
                                                     "landmarks_px.npy", "meta.json"]


def test_prepare_split_names_a_bad_face_and_records_its_reason(tmp_path):
    """The recorded reason is the error without its "<file>: " prefix, also for a path holding ': '."""
    bad = np.array([[10, 10], [10, 10], [10, 10]], np.float32)
    img = np.zeros((40, 40, 3), np.uint8)
    samples, cfg, info = _split_inputs(tmp_path, [img, img], paths=["dir: x/a b.png", "dir x/c.png"])
    samples[0] = fmt.Sample(id="f0", image_path="dir: x/a b.png", landmarks_px=bad, box_xywh=None, image=img)
    why = "the landmarks span only 0 px (the points coincide); fix the annotation"
    with pytest.raises(DataFormatError) as err:
        du._prepare_split(samples, tmp_path / "strict", cfg, info, True, [], False)
    assert str(err.value) == f"dir: x/a b.png: {why}"
    skipped = []
    with pytest.warns(UserWarning, match="skipping dir: x/a b.png: the landmarks span only 0 px"):
        assert du._prepare_split(samples, tmp_path / "lenient", cfg, info, False, skipped, False) == 1
    assert skipped == [{"file": "dir: x/a b.png", "reason": why}]
    # every face skipped: the first one is named
    samples[1] = fmt.Sample(id="f1", image_path="dir x/c.png", landmarks_px=np.array([[10, 10], [30, 10], [500, 9]], np.float32),
                            box_xywh=None, image=img)
    skipped = []
    with pytest.warns(UserWarning), pytest.raises(DataFormatError) as err:
        du._prepare_split(samples, tmp_path / "none", cfg, info, False, skipped, False)
    assert [s["file"] for s in skipped] == ["dir: x/a b.png", "dir x/c.png"]
    assert skipped[1]["reason"] != why
    assert str(err.value) == f"{tmp_path}: every none face was skipped (dir: x/a b.png: {why} ...); fix the data"


def test_prepare_split_shows_a_progress_bar_on_stderr_and_clears_it(tmp_path, capsys):
    samples, cfg, info = _split_inputs(tmp_path, [np.zeros((40, 40, 3), np.uint8)] * 3)
    du._prepare_split(samples, tmp_path / "train", cfg, info, True, [], False)
    assert capsys.readouterr() == ("", "")                                  # progress=False: silent
    du._prepare_split(samples, tmp_path / "train", cfg, info, True, [], True)
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("\rprepare train:   0%|") and "| 0/3 [00:00<?, ?face/s]" in err
    assert err.endswith(" \r") and "\n" not in err                          # leave=False: cleared at the end


def test_the_embedded_data_is_regenerated_only_when_it_is_not_the_default_set(tmp_path, monkeypatch, capsys):
    import synthetic_faces as sf

    monkeypatch.setattr(C, "SYNTHETIC_DIR", tmp_path)
    made = []
    monkeypatch.setattr(sf, "generate_default", lambda name, root: made.append((name, root)))
    marker = {"dataset": "300w", "num_train": 3000, "num_test": 300, "seed": 0, "version": sf.GENERATOR_VERSION}
    (tmp_path / "300w").mkdir()
    (tmp_path / "300w" / sf.MARKER).write_text(json.dumps(marker))
    assert du._resolve_root(C.PrepareConfig()) == tmp_path / "300w" and made == []
    for change in ({"dataset": "cofw"}, {"seed": 1}, {"num_train": 2999}):
        (tmp_path / "300w" / sf.MARKER).write_text(json.dumps({**marker, **change}))
        assert du._resolve_root(C.PrepareConfig()) == tmp_path / "300w"
        assert made == [("300w", tmp_path / "300w")], change
        made.clear()
    assert capsys.readouterr().err.count(f"generating the embedded synthetic 300w data in {tmp_path / '300w'} ...") == 3
    assert du._resolve_root(C.PrepareConfig(root=str(tmp_path / "mine"))) == tmp_path / "mine" and made == []


def test_prepare_split_records_each_faces_fields_in_meta(tmp_path):
    img = np.zeros((40, 40, 3), np.uint8)
    pts = np.array([[10, 10], [30, 10], [20, 30]], np.float32)
    s = fmt.Sample(id="w/1", image_path="", landmarks_px=pts, box_xywh=np.array([8, 9, 25, 24], np.float32),
                   subset="hard", attributes=np.array([0, 1, 0, 0, 0, 1], np.int8), occluded=np.array([0, 1, 0], bool),
                   image=img)
    _, cfg, info = _split_inputs(tmp_path, [])
    du._prepare_split([s], tmp_path / "train", cfg, info, True, [], False)
    assert json.loads((tmp_path / "train" / "meta.json").read_text()) == {
        "ids": ["w/1"], "image_paths": [""], "subsets": ["hard"], "attributes": [[0, 1, 0, 0, 0, 1]],
        "occluded": [[False, True, False]], "box_xywh": [[8.0, 9.0, 25.0, 24.0]]}


# ---------------------------------------------------------------------------- prepare


def test_prepare_refuses_bad_settings_word_by_word(tmp_path):
    def msg(cfg, **kw):
        with pytest.raises(ConfigError) as err:
            du.prepare(cfg, progress=False, **kw)
        return str(err.value)

    assert msg(C.PrepareConfig(box="x")) == "--box 'x': choose 'landmarks' or 'dataset'"
    for margin in (-0.1, float("inf"), float("nan")):
        assert msg(C.PrepareConfig(margin=margin)) == f"--margin {margin}: must be a finite number >= 0"
    cfg = C.PrepareConfig(dataset="300W", box="dataset", margin=0.0)           # a margin of 0 is allowed
    assert msg(cfg) == "--box dataset: 300-W .pts files carry no face box; use --box landmarks"
    assert cfg.dataset == "300w"                                              # the name kept in lower case
    assert msg(C.PrepareConfig(custom_spec=str(tmp_path))) == (
        f"--custom-spec {tmp_path}: is a folder; pass the JSON spec file inside it")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"name": "x-synthetic", "num_points": 2, "interocular": [[0], [1]]}))
    # --dataset naming the spec's own name is accepted; the name is then checked as a folder name
    assert msg(C.PrepareConfig(dataset="x-synthetic", custom_spec=str(spec), input_size=64)) == (
        f"{spec}: name 'x-synthetic' would share the embedded data's prepared folder (x-synthetic-64); "
        f"change \"name\" in the spec")


def test_prepare_reuses_or_rebuilds_and_names_its_folder(tmp_path, monkeypatch, capsys):
    import fcntl
    import os

    import fixtures as fx
    from safe_io import LOCK_SUFFIX

    spec = fx.make_custom(tmp_path / "c")
    out = tmp_path / "out"
    cfg = lambda **kw: C.PrepareConfig(custom_spec=str(spec), input_size=32, **kw)   # noqa: E731
    du.prepare(cfg(out_dir=str(out)))
    assert "prepare train:" in capsys.readouterr().err                       # progress shown by default
    fd = os.open(out.parent / f".{out.name}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                        # another command holds it
        assert du.prepare(cfg(out_dir=str(out)), progress=False) == out      # the same settings: reused, no lock
        assert capsys.readouterr().out.startswith(f"reusing prepared five data in {out} ")
        with pytest.raises(ConfigError) as err:
            du.prepare(cfg(out_dir=str(out)), progress=False, force=True)    # force: rebuilt, so locked
        assert str(err.value).startswith(f"--out-dir {out}: another command is writing it (")
        monkeypatch.setattr(C, "PREPARED_DIR", tmp_path)
        default = tmp_path / "five-32"
        fd2 = os.open(tmp_path / f".five-32{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError) as err:
            du.prepare(cfg(), progress=False)
        assert str(err.value).startswith(f"prepared folder {default}: another command is writing it (")
        os.close(fd2)
    finally:
        os.close(fd)


def test_synthetic_sizes_of_each_source():
    import synthetic_faces as sf

    assert du._synthetic_sizes(C.PrepareConfig(dataset="COFW")) == list(sf.DEFAULT_SIZES["cofw"])
    assert du._synthetic_sizes(C.PrepareConfig(dataset="mine")) == []                # no embedded set
    assert du._synthetic_sizes(C.PrepareConfig(root="r")) is None
    assert du._synthetic_sizes(C.PrepareConfig(custom_spec="s.json")) is None


def test_clear_outputs_removes_what_prepare_wrote_and_nothing_else(tmp_path):
    for d in ("train", "test", "train_aug"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "images.npy").write_bytes(b"x")
    for f in ("manifest.json", "asm.npz", "prepare_config.json", "notes.txt"):
        (tmp_path / f).write_text("x")
    (tmp_path / "mine").mkdir()
    du._clear_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]
    du._clear_outputs(tmp_path)                                                # nothing left to remove: fine


@pytest.mark.parametrize("manifest", ["[1]", '{"complete": true, "counts": 3}', "{oops"])
def test_a_manifest_that_is_not_a_prepare_record_is_not_reused(tmp_path, manifest):
    (tmp_path / "manifest.json").write_text(manifest)
    assert du._reusable(tmp_path, {}, C.DATASETS["300w"]) is False


def test_prepare_rechecks_under_the_lock_and_names_the_default_folder(tmp_path, monkeypatch, capsys):
    import fixtures as fx

    spec = fx.make_custom(tmp_path / "c")
    cfg = lambda **kw: C.PrepareConfig(custom_spec=str(spec), input_size=32, **kw)   # noqa: E731
    out = du.prepare(cfg(out_dir=str(tmp_path / "out")), progress=False)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    capsys.readouterr()
    real, calls = du._reusable, []

    def first_false(*args):                 # another prepare finishes the folder while this one waits
        calls.append(args)
        return len(calls) > 1 and real(*args)

    monkeypatch.setattr(du, "_reusable", first_false)
    assert du.prepare(cfg(out_dir=str(out)), progress=False) == out and len(calls) == 2
    assert capsys.readouterr().out == (f"reusing prepared five data in {out} (train {counts['train']}, "
                                       f"test {counts['test']} faces; same configuration)\n")
    monkeypatch.setattr(C, "PREPARED_DIR", tmp_path)
    (tmp_path / "five-32").mkdir()
    (tmp_path / "five-32" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as err:
        du.prepare(cfg(), progress=False)
    assert str(err.value).startswith(f"prepared folder {tmp_path / 'five-32'}: this folder holds files not made "
                                     f"by this project (notes.txt; ")


def test_a_failed_prepare_removes_only_a_folder_it_made_and_marks_what_a_folder_holds(tmp_path):
    import fixtures as fx
    from safe_io import read_owner

    spec = fx.make_custom(tmp_path / "c")
    cfg = lambda out: C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(out))   # noqa: E731
    out = du.prepare(cfg(tmp_path / "out"), progress=False)
    assert read_owner(out)["holds"] == "prepared five faces at 32 px"
    (spec.parent / "test.txt").write_text("")                    # no test faces: prepare stops after its claim
    new, mine = tmp_path / "new" / "deep", tmp_path / "mine"
    mine.mkdir()                                                 # the user's own empty folder
    for folder in (new, mine):
        with pytest.raises(DataFormatError):
            du.prepare(cfg(folder), progress=False)
    assert not new.exists()                                      # made by the failed prepare: removed
    assert mine.is_dir()                                         # the user's: kept


def test_a_prepared_folder_of_another_configuration_is_refused_with_or_without_its_marker(tmp_path):
    import fixtures as fx
    from safe_io import OWNER_FILE

    spec = fx.make_custom(tmp_path / "c")
    out = tmp_path / "out"
    cfg = lambda m: C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(out), margin=m)  # noqa: E731
    du.prepare(cfg(0.25), progress=False)
    before = (out / "manifest.json").read_text()
    for marker in (True, False):                       # False: an older folder, written before the marker
        if not marker:
            (out / OWNER_FILE).unlink()
        with pytest.raises(ConfigError) as err:
            du.prepare(cfg(0.5), progress=False)
        assert str(err.value) == (f"--out-dir {out}: holds complete prepared five data made with another "
                                  f"configuration (margin 0.25, now 0.5); choose another --out-dir, or pass "
                                  f"--overwrite to replace it")
        assert (out / "manifest.json").read_text() == before


def _broken_pts(path: Path) -> str:
    """Turn a .pts file into one the reader refuses; returns the reader's reason (without the path)."""
    path.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(DataFormatError) as err:
        fmt.read_pts(path)
    return fmt.error_reason(err.value, path)


def test_prepare_refuses_a_bad_face_when_strict_and_otherwise_records_it(tmp_path, capsys):
    import fixtures as fx

    root = tmp_path / "300w"
    fx.make_300w_tree(root)
    bad = root / "afw" / "134212_1.pts"
    reason = _broken_pts(bad)
    cfg = lambda name: C.PrepareConfig(dataset="300w", root=str(root), input_size=32,   # noqa: E731
                                       out_dir=str(tmp_path / name))
    with pytest.raises(DataFormatError) as err:
        du.prepare(cfg("strict"), strict=True, progress=False)
    assert str(err.value) == f"{bad}: {reason}"
    assert not (tmp_path / "strict").exists()                     # refused before anything was kept
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipping"):
        out = du.prepare(cfg("lenient"), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == {"train": [{"file": str(bad), "reason": reason}], "test": []}
    assert manifest["counts"] == {"train": 3, "test": 3}
    assert capsys.readouterr().out == (f"prepared 300w: train 3, test 3 faces at 32x32, 1 skipped -> {out}\n")
    for pf in ("lfpw/testset/image_0001.pts", "helen/testset/30427236_1.pts", "ibug/image_003_1.pts"):
        _broken_pts(root / pf)                                   # no usable test face is left
    with pytest.warns(UserWarning), pytest.raises(DataFormatError) as err:
        du.prepare(cfg("none"), progress=False)
    assert str(err.value) == f"{root}: no usable test faces (3 skipped); fix the data"


def test_prepare_overwrites_only_with_overwrite_and_rebuilds_an_older_folder(tmp_path, monkeypatch):
    import fixtures as fx
    from safe_io import OWNER_FILE, read_owner

    spec = fx.make_custom(tmp_path / "c")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)                                      # prepare writes nothing but its folder
    cfg = lambda out: C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(out))   # noqa: E731
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        du.prepare(cfg(mine), progress=False)                    # a folder of the user's: refused
    assert du.prepare(cfg(mine), progress=False, overwrite=True) == mine
    assert (mine / "notes.txt").read_text() == "mine"            # written beside the user's file
    assert json.loads((mine / "manifest.json").read_text())["complete"] is True
    (mine / "notes.txt").unlink()
    (mine / OWNER_FILE).unlink()                                 # an older prepared folder: no marker
    assert du.prepare(cfg(mine), progress=False, force=True) == mine        # recognised, rebuilt
    assert read_owner(mine)["holds"] == "prepared five faces at 32 px"
    assert list(work.iterdir()) == []


def test_prepare_without_the_room_names_what_it_needs_and_the_fix(tmp_path, monkeypatch):
    import errno
    import os
    import shutil

    import fixtures as fx

    spec = fx.make_custom(tmp_path / "c")
    out = tmp_path / "out"
    cfg = C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(out))
    needed = du._prepare_bytes([4, 3], 32, 5)
    monkeypatch.setattr(du.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12, 2 ** 20))
    with pytest.raises(du.NoSpaceError) as err:
        du.prepare(cfg, progress=False)
    assert str(err.value) == (f"no space left on {out}: prepare (7 faces at 32 px) needs about {du._mib(needed)}, "
                              f"1.0 MiB free; free disk space, lower --input-size, or pass --out-dir on a larger disk")
    assert not out.exists()
    monkeypatch.undo()

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(du, "_prepare_split", full)
    with pytest.raises(du.NoSpaceError) as err:
        du.prepare(cfg, progress=False)
    assert str(err.value) == (f"no space left on {out} (the disk filled while writing); free disk space, lower "
                              f"--input-size, or pass --out-dir on a larger disk; nothing was kept")
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()                                                 # the user's own empty folder: kept
    with pytest.raises(du.NoSpaceError):
        du.prepare(C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(mine)), progress=False)
    from safe_io import folder_contents
    assert mine.is_dir() and folder_contents(mine) == []        # nothing half-written stays behind


def test_the_manifest_records_a_custom_layout_the_source_and_when_in_utc(tmp_path, monkeypatch):
    import calendar
    import time

    import fixtures as fx

    spec = fx.make_custom(tmp_path / "c")
    info = fmt.read_custom_spec(spec)
    monkeypatch.setenv("TZ", "XYZ-9")                     # a local time 9 hours ahead of UTC
    time.tzset()
    try:
        t0 = int(time.time())
        out = du.prepare(C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(tmp_path / "o")),
                         progress=False)
        t1 = time.time()
    finally:
        monkeypatch.undo()
        time.tzset()
    manifest = json.loads((out / "manifest.json").read_text())
    assert t0 <= calendar.timegm(time.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")) <= t1
    assert manifest["dataset_spec"] == info.as_spec() and manifest["source_root"] == str(spec.parent)
    spec.unlink()                                           # the prepared data carry their layout
    assert du.dataset_of_manifest(manifest) == info
    root = tmp_path / "300w"
    fx.make_300w_tree(root)
    out = du.prepare(C.PrepareConfig(dataset="300w", root=str(root), input_size=32, out_dir=str(tmp_path / "w")),
                     progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "dataset_spec" not in manifest and manifest["source_root"] == str(root)
