"""`python test.py --image/--video/--folder` with an input that is not there: one line naming the file
and the option, exit status 2, and no results folder made (an empty one was left behind before)."""
from __future__ import annotations

import pytest

import errors


@pytest.mark.parametrize("option, make", [("--image", None), ("--video", None), ("--folder", None),
                                          ("--image", "dir"), ("--folder", "file")])
def test_a_missing_input_is_named_before_any_results_folder(tmp_path, monkeypatch, capsys, option, make):
    import test as test_cli

    results = tmp_path / "results"
    monkeypatch.setattr(test_cli, "RESULTS_DIR", results)
    given = tmp_path / ("missing.jpg" if option != "--folder" else "missing")
    if make == "dir":
        given.mkdir()                       # a folder given as the photo
    elif make == "file":
        given.write_bytes(b"x")             # a file given as the folder
    with pytest.raises(errors.DataFormatError) as caught:
        test_cli.main([option, str(given)])
    what = {"--image": "image", "--video": "video", "--folder": "folder"}[option]
    assert str(caught.value) == f"{given}: {what} not found ({option}); check the path"
    assert not results.exists()
    assert errors.run_cli(test_cli.main, [option, str(given)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(given) in err and option in err
    assert not results.exists()
