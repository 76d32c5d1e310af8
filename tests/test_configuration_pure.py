"""configuration.py is pure (issue 34 item 6): no file I/O, no module state that changes. A custom
dataset's spec is read once, where a command starts (dataset_formats.read_custom_spec), into a
DatasetInfo that is passed down as data; prepare records that layout in the manifest, so the
prepared folder carries it even when the spec file changes or goes."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import configuration as C
import data_util as du
import dataset_formats as fmt
from errors import ConfigError

SOURCE = Path(C.__file__)

# What would read or write a file, or reach the file system, from configuration.py.
IO_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "load", "loads", "dump",
            "dumps", "save", "mkdir", "unlink", "rmdir", "iterdir", "glob", "rglob", "exists",
            "is_file", "is_dir", "stat", "touch", "atomic_write_json"}
IO_MODULES = {"json", "os", "io", "shutil", "tempfile", "pickle", "h5py", "numpy", "safe_io"}
MUTATORS = {"update", "pop", "popitem", "setdefault", "clear", "append", "extend", "insert",
            "remove", "add", "discard", "__setitem__", "__delitem__"}


def _module_names(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _root_name(node):
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def impurities(source: str) -> list:
    """Every file I/O call, I/O module import, `global` statement and change to a module-level
    name (item or attribute assignment, del, a mutating method call) in `source`."""
    tree = ast.parse(source)
    module_names = _module_names(tree)
    found = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in mods if m.split(".")[0] in IO_MODULES]
        elif isinstance(node, ast.Global):
            found.append(f"{where}: global {', '.join(node.names)}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in IO_CALLS:
                found.append(f"{where}: calls {name}")
            if isinstance(f, ast.Attribute) and name in MUTATORS and _root_name(f.value) in module_names:
                found.append(f"{where}: {_root_name(f.value)}.{name}(...)")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, (ast.Subscript, ast.Attribute)) and _root_name(t) in module_names:
                    found.append(f"{where}: changes {_root_name(t)}")
    return found


def test_configuration_has_no_file_io_and_no_changing_state():
    assert impurities(SOURCE.read_text()) == []


@pytest.mark.parametrize("planted", [
    "import json\n",
    "def f(p):\n    return Path(p).read_text()\n",
    "_TABLE = {}\ndef f(k, v):\n    _TABLE[k] = v\n",
    "_TABLE = {}\ndef f(k, v):\n    _TABLE.update({k: v})\n",
    "_N = 0\ndef f():\n    global _N\n    _N += 1\n",
])
def test_the_scan_sees_what_it_looks_for(planted):
    """The scan itself, on code of the kinds it must refuse (register_custom_dataset was two of them)."""
    assert impurities(SOURCE.read_text() + "\n" + planted)


def test_builtin_table_is_read_only():
    with pytest.raises(TypeError):
        C.DATASETS["mine"] = C.DATASETS["300w"]
    assert sorted(C.DATASETS) == ["300w", "cofw", "wflw"]


SPEC = {"name": "Five", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]], "interocular": [[0], [1]],
        "train_list": "a.txt", "test_list": "b.txt", "aug_copies": 2}


def test_from_spec_by_hand_and_round_trip():
    info = C.DatasetInfo.from_spec(SPEC, source="x.json")
    assert info.name == "five" and info.num_points == 5 and info.official_format == "custom"
    assert info.flip_permutation == [1, 0, 2, 4, 3]                 # pairs (0, 1), (3, 4) swapped
    assert info.interpupil == info.interocular == ((0,), (1,))      # interpupil defaults to io
    assert info.train_splits == ("a.txt",) and info.test_splits == ("b.txt",)
    assert info.aug_copies == 2
    assert C.DatasetInfo.from_spec(info.as_spec()) == info
    assert json.loads(json.dumps(info.as_spec())) == info.as_spec()  # what a manifest stores


@pytest.mark.parametrize("change,fragment", [
    ({"num_points": 0}, "num_points 0"),
    ({"flip_pairs": [[0, 5]]}, "indices must lie in 0..4"),
    ({"flip_pairs": [[0, 1], [1, 2]]}, "two flip pairs"),
    ({"name": "300W"}, "built-in dataset"),
    ({"interocular": None}, "missing or invalid field"),
    ({"aug_copies": "many"}, "missing or invalid field"),
])
def test_from_spec_errors_name_the_source(change, fragment):
    with pytest.raises(ConfigError) as err:
        C.DatasetInfo.from_spec({**SPEC, **change}, source="my/spec.json")
    assert str(err.value).startswith("my/spec.json: ") and fragment in str(err.value)


def test_reading_a_spec_registers_nothing(tmp_path):
    """dataset_info does not depend on an earlier call: reading a spec changes no table, and two
    specs of the same name give their own layouts."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(SPEC))
    b.write_text(json.dumps({**SPEC, "num_points": 7}))
    before = dict(C.DATASETS)
    info_a, info_b = fmt.read_custom_spec(a), fmt.read_custom_spec(b)
    assert (info_a.num_points, info_b.num_points) == (5, 7)
    assert dict(C.DATASETS) == before
    with pytest.raises(ConfigError, match="unknown dataset 'five'.*--custom-spec"):
        C.dataset_info("five")
    assert C.dataset_info(info_a) is info_a                          # passed down as it is
    assert fmt.resolve_dataset("300w", a) == info_a
    assert fmt.resolve_dataset("COFW") is C.DATASETS["cofw"]


def test_prepared_folder_carries_its_layout(tmp_path):
    """prepare records the spec's layout in manifest.json: the folder's dataset is the layout its
    crops were made with, after the spec file is edited or removed."""
    from fixtures import make_custom

    spec = make_custom(tmp_path / "mydata")
    info = fmt.read_custom_spec(spec)
    out = du.prepare(C.PrepareConfig(custom_spec=str(spec), input_size=32, out_dir=str(tmp_path / "p")),
                     progress=False, info=info)
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "flip_pairs": []}))   # edited...
    assert du.dataset_of_manifest(du.read_manifest(out)) == info
    spec.unlink()                                                                     # ...then gone
    assert du.dataset_of_manifest(du.read_manifest(out)) == info
