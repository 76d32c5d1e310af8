"""The documents (issue 34): rendered tables in step with their JSON, the README's commands in step
with the scripts' options, the README a front page, the model card naming exactly the shipped files,
and .gitignore keeping user models out of git."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import render_docs as R  # noqa: E402

README = ROOT / "README.md"


# ----------------------------------------------------------------------------------------------
# Rendered blocks
# ----------------------------------------------------------------------------------------------


def test_every_rendered_block_is_up_to_date():
    cache: dict = {}
    stale = {str(p.relative_to(ROOT)): R.stale_blocks(p, cache) for p in R.documents()}
    assert not {k: v for k, v in stale.items() if v}, "run python tools/render_docs.py"
    names = {m.group("name") for p in R.documents() for m in R.BLOCK.finditer(p.read_text())}
    assert {"what_teachers_add", "shipped_models", "model_card", "scores_synthetic"} <= names


def test_a_hand_edited_figure_is_found_stale():
    text = README.read_text()
    block = next(m for m in R.BLOCK.finditer(text) if m.group("name") == "what_teachers_add")
    edited = text.replace(block.group("body"), block.group("body").replace("7.62", "7.61", 1))
    assert edited != text and R.render_text(edited) == text


def test_check_exits_non_zero_on_a_stale_document(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "README.md"
    doc.write_text("x\n<!-- BEGIN rendered:shipped_models -->\nold\n<!-- END rendered:shipped_models -->\n")
    monkeypatch.setattr(R, "documents", lambda root=R.ROOT: [doc])
    monkeypatch.setattr(R, "ROOT", tmp_path)
    assert R.main(["--check"]) == 1
    assert "README.md: shipped_models" in capsys.readouterr().err
    assert "old" in doc.read_text()                      # --check writes nothing
    assert R.main([]) == 0 and R.main(["--check"]) == 0
    assert "`students/300w_kd.keras`" in doc.read_text()


def test_paired_difference_against_a_hand_computed_t_interval():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 d.f.) = 4.302653 -> half-width 4.302653 / sqrt(3)
    d = R.paired([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert d["mean"] == pytest.approx(2.0)
    assert d["high"] - d["mean"] == pytest.approx(4.302653 / 3 ** 0.5, abs=1e-5)
    assert R.spread([1.0, 2.0, 3.0]) == "2.00 ± 1.00 [1.00-3.00]"


def test_the_headline_reproduces_the_study_files_own_statistics():
    """The rendered KD - L2 and KD - L1 intervals equal demo.summarize_seeds' own (demo.paired_difference)
    on the same seeds, and the earlier study file's KD - L2 interval where its values are the same."""
    import demo

    spec = json.loads((R.DEMO_SEEDS / "results.json").read_text())["what_teachers_add"]
    rows = {r["key"]: r for r in R.seed_rows(spec)}
    for base in ("student-l2", "student-l1"):
        d = R.paired_by_seed(rows[base], rows["student-kd"])
        own = demo.paired_difference(rows["student-kd"]["values"], rows[base]["values"])
        assert [d["low"], d["high"]] == pytest.approx(list(own["ci95"]))
    earlier = json.loads((R.DEMO_SEEDS / "demo_seeds_182a34b.json").read_text())
    if rows["student-kd"]["values"] == earlier["student-kd"]["full"]["values"]:
        d = R.paired(rows["student-l2"]["values"], rows["student-kd"]["values"])
        assert [d["low"], d["high"]] == pytest.approx(earlier["paired_vs_l2"]["student-kd"]["ci95"])


def test_plain_json_table_block(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text(json.dumps({"t": {"columns": ["a", "b"], "rows": [[1, "x"]]}}))
    monkeypatch.setattr(R, "ROOT", tmp_path)
    assert R.render_block("table:r.json#t") == "| a | b |\n|---|---|\n| 1 | x |\n"
    (tmp_path / "s.json").write_text(json.dumps({"t": {"columns": ["m"], "rows": [["**{score:300w_kd.real.median}**"]]}}))
    kd = next(m for m in json.loads(R.SCORES.read_text())["models"] if m["file"] == "students/300w_kd.keras")
    assert R.render_block("table:s.json#t") == f"| m |\n|---|\n| **{kd['real']['median']:.2f}** |\n"


front_documents = R.front_documents


# A figure equal to a rendered one by chance: (document, the words around it).
COINCIDENCES = [("docs/results/model_training.md", "6.73% / 6.47%"),            # a Tough run's validation, not precise_bn's KD
                ("docs/results/model_training.md", "7.99% without"),            # the stochastic-depth runs' validation NME
                ("docs/results/model_training.md", "11.15% without"),
                ("docs/results/demo_seeds.md", "L2 11.91%")]                    # a demo run, not the Tolerant teacher's


def test_headline_figures_are_typed_only_in_json():
    """Each shipped model's scores are typed once, in models/scores.json, and each study figure of
    render_docs.FIGURES once, in its study's results.json: the documents show them through rendered
    blocks (a table, or `score:<stem>.<field>` / `fig:NAME` inline), never typed by hand."""
    figures = {**R.headline_figures(), **{R.figure(n): f"fig:{n}" for n in R.FIGURES}}   # study and reference figures
    assert {"4.77", "5.55", "3.35", "4.68", "10.87", "6.70", "7.89"} <= set(figures)
    typed = {}
    for path in front_documents():
        rel = str(path.relative_to(ROOT))
        text = without_coincidences(path)
        if R.hand_typed(text, figures):
            typed[rel] = R.hand_typed(text, figures)
    assert not typed, ("typed by hand outside rendered blocks (use <!-- BEGIN rendered:score:STEM.FIELD --> "
                       f"or point to the table): {typed}")


def without_coincidences(path):
    rel, text = str(path.relative_to(ROOT)), path.read_text()
    for doc, words in COINCIDENCES:
        text = text.replace(words, "") if doc == rel else text
    return text


def test_a_marked_figure_is_typed_nowhere_else():
    """Each figure a page renders inline (fig:NAME or score:STEM.FIELD) with a unit after it ("%",
    " points") is typed by hand with that unit on no front page: the JSON cell is its one place."""
    pages = R.front_documents()
    marked = R.marked_figures([p.read_text() for p in pages])
    assert len(marked) > 100 and ("4.23", "%") in marked
    typed = {str(p.relative_to(ROOT)): R.typed_again(without_coincidences(p), marked) for p in pages}
    assert not {k: v for k, v in typed.items() if v}, (
        "typed by hand though a page renders it from its JSON: mark it <!-- BEGIN rendered:fig:NAME -->... "
        "(tools/render_docs.py FIGURES) or add it to COINCIDENCES if it is another measurement")


def test_a_planted_duplicate_of_a_marked_figure_is_found():
    """4.23% (the Tolerant teacher against its aligned soft landmarks, fig:tolerant_floor_2.r1c2 in
    model_training.md) typed again in another page is found at its line; the same number with another
    unit, bare, or inside a marker is not."""
    pages = R.front_documents()
    marked = R.marked_figures([p.read_text() for p in pages])
    text = (ROOT / "docs/results/demo_seeds.md").read_text()
    assert R.typed_again(text, marked) == []
    planted = text + "\nThe aligned Tolerant teacher is 4.23 % off its own targets.\n"
    assert R.typed_again(planted, marked) == [f"line {len(planted.splitlines())}: 4.23% (fig:tolerant_floor_2.r1c2)"]
    inline = "<!-- BEGIN rendered:fig:tolerant_floor_2.r1c2 -->4.23<!-- END rendered:fig:tolerant_floor_2.r1c2 -->"
    assert R.typed_again(f"4.23 MiB, 4.23, 14.23%, {inline}%", marked) == []
    assert R.marked_figures([f"gap {inline} points"]) == {("4.23", " points"): "fig:tolerant_floor_2.r1c2"}
    assert R.typed_again("a gap of 4.23 points", R.marked_figures([f"gap {inline} points"])) == [
        "line 1: 4.23 points (fig:tolerant_floor_2.r1c2)"]


def test_the_nth_number_of_a_cell():
    """`~N` in FIGURES takes the cell's number N: "6.06% / 34.87%, kept its own" ~1 -> 34.87."""
    cell = json.loads((ROOT / "bench/studies/batchnorm/results.json").read_text())["freeze_batchnorm_2"]["rows"][0][1]
    assert cell.startswith("6.06% / 34.87%")
    assert R.FIGURES["freeze_batchnorm_2.r0c1n1"].endswith("rows.0.1~1")
    assert (R.figure("freeze_batchnorm_2.r0c1"), R.figure("freeze_batchnorm_2.r0c1n1")) == ("6.06", "34.87")


def test_a_study_figure_is_the_first_number_of_its_cell():
    """fig:NAME renders the leading figure of the cell FIGURES names ("**5.57%** (4.73 / 9.01)" -> 5.57),
    and an inline figure edited by hand is re-rendered."""
    cell = json.loads((ROOT / "bench/studies/batchnorm/results.json").read_text())["freeze_batchnorm_3"]["rows"][0][2]
    assert cell.startswith("**") and R.figure("tough_frozen") == cell.strip("*").split("%")[0]
    inline = "<!-- BEGIN rendered:fig:tolerant_floor -->{}<!-- END rendered:fig:tolerant_floor -->"
    floor = json.loads((ROOT / "bench/studies/tolerant_floor/results.json").read_text())["tolerant_floor"]["rows"][0]
    assert floor[0].startswith("soft landmarks") and R.render_text(inline.format("0.00")) == inline.format(floor[1])
    with pytest.raises(SystemExit, match="FIGURES"):
        R.figure("no_such_figure")


def test_a_planted_duplicate_of_a_headline_figure_is_found():
    text = README.read_text()
    assert R.hand_typed(text, R.headline_figures()) == []
    planted = text.replace("## Where everything else lives", "The KD student scores 4.68 % here.\n\n"
                           "## Where everything else lives")
    found = R.hand_typed(planted, R.headline_figures())
    assert found == [f"line {planted.splitlines().index('The KD student scores 4.68 % here.') + 1}: "
                     "4.68% (students/300w_kd.keras synthetic.full)"]
    inline = "<!-- BEGIN rendered:score:300w_kd.synthetic.full -->4.68<!-- END rendered:score:300w_kd.synthetic.full -->%"
    assert R.hand_typed(f"KD scores {inline} here.", R.headline_figures()) == []
    assert R.render_text(inline.replace(">4.68<", ">4.00<")) == inline       # stale inline figure re-rendered


def test_every_study_the_documents_cite_has_its_numbers_as_json():
    """A study folder named in the README or docs/ holds results.json: tables as render_docs reads them."""
    cited = set()
    for path in [README, *ROOT.glob("docs/**/*.md")]:
        cited |= set(re.findall(r"bench/studies/(\w+)", path.read_text()))
    assert {"demo_seeds", "sim_to_real", "tolerant_floor", "batchnorm"} <= cited
    for study in sorted(cited):
        data = json.loads((ROOT / "bench" / "studies" / study / "results.json").read_text())
        tables = [v for v in data.values() if isinstance(v, dict) and "columns" in v]
        assert tables, study
        for table in tables:
            assert all(len(row) == len(table["columns"]) for row in table["rows"]), study


def test_a_study_scripts_tables_round_trip_through_its_json(tmp_path):
    """bench/results_json: the tables of a results file written by _common.publish come back as the
    same cells, render_docs prints them again as the same Markdown, and a second script's keys, or
    tables transcribed before, are kept when one script records again."""
    sys.path.insert(0, str(ROOT / "bench"))
    import _common
    import results_json as J

    rows = [["soft landmarks", 6.7, 0.0], ["300w_tough.keras", 4.77, 6.45]]
    body = _common.md_table(["what", "NME % (gt)", "NME % (soft)"], rows)
    text = _common.header_block("Floor", ["--models", "m.keras"]) + "\n" + body + "\n\n## Aligned\n\n" + body + "\n"
    study = tmp_path / "study.md"
    study.write_text(text)
    out = J.record(study, json_path=tmp_path / "results.json")
    data = json.loads(out.read_text())
    assert data["study"]["rows"] == [["soft landmarks", "6.7", "0"], ["300w_tough.keras", "4.77", "6.45"]]
    assert data["study_2"]["title"] == "Aligned"
    assert data["runs"]["study"][0]["command"].endswith("--models m.keras")
    monkey_root = R.ROOT
    try:
        R.ROOT = tmp_path
        assert R.render_block("table:results.json#study") == body + "\n"
    finally:
        R.ROOT = monkey_root
    data["earlier"] = {"columns": ["a"], "rows": [["1"]]}
    data["study_3"] = {"columns": ["stale"], "rows": []}
    again = J.merged(data, "study", body, "study.md")
    assert again["earlier"] == data["earlier"] and "study_3" not in again and "study_2" not in again
    assert J.json_path_for(study) == tmp_path / "study.tables.json"     # outside bench/studies: never results.json
    assert J.json_path_for(ROOT / "bench/studies/tolerant_floor/tolerant_floor.md").name == "results.json"


# ----------------------------------------------------------------------------------------------
# The README
# ----------------------------------------------------------------------------------------------


def test_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 250


def readme_commands(text: str):
    """(script, [args]) for every `python X.py ...` line of the README's ```bash blocks, with
    continuation lines joined, comments dropped and `&&` chains split."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if len(words) >= 2 and words[0] == "python" and words[1].endswith(".py"):
                    out.append((words[1], words[2:]))
    return out


def _help_texts(commands):
    """`python SCRIPT [SUBCOMMAND] --help` for each distinct script, run side by side."""
    keys = {(s, a[0] if a and not a[0].startswith("-") else None) for s, a in commands}
    procs = {k: subprocess.Popen([sys.executable, k[0], *([k[1]] if k[1] else []), "--help"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in keys}
    return {k: (p.communicate(timeout=300)[0], p.returncode) for k, p in procs.items()}


def test_readme_commands_use_only_options_their_scripts_have():
    commands = readme_commands(README.read_text())
    assert len(commands) >= 20 and ("demo.py", []) in commands
    helps = _help_texts(commands)
    for (script, sub), (text, code) in helps.items():
        assert code == 0, f"python {script} {sub or ''} --help failed:\n{text[-2000:]}"
    for script, args in commands:
        assert (ROOT / script).is_file(), script
        sub = args[0] if args and not args[0].startswith("-") else None
        text = helps[(script, sub)][0]
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"README: `python {script}` has no {flag}"
        for flag, value in zip(args, args[1:]):           # a value among the flag's listed choices
            choices = re.search(rf"{re.escape(flag)} \{{([^}}]*)\}}", text) if flag.startswith("--") else None
            if choices:
                assert value in choices.group(1).split(","), f"README: {flag} {value} is not a choice"


def test_readme_quick_commands_run_as_printed(tmp_path):
    """The README's photo commands, run as printed in the repository root, draw the points of a real
    face (each writes a new results/<time>-<model>/ folder, removed here), and its Python example,
    run as printed from a folder outside the repository, prints one face's box and (68, 2)."""
    import os

    text = README.read_text()
    photo = re.search(r"## Run it on a photo\n\n```bash\n(.*?)```", text, re.S).group(1)
    example = re.search(r"## From Python\n.*?```python\n(.*?)```", text, re.S).group(1)
    commands = [shlex.split(line.split(" #")[0]) for line in photo.splitlines() if line.strip()]
    assert len(commands) == 2 and all(c[:2] == ["python", "test.py"] for c in commands)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = [subprocess.Popen([sys.executable, *c[1:]], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in commands]
    procs.append(subprocess.Popen([sys.executable, "-c", example], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    drawn = [Path(m) for out in outputs[:2] for m in re.findall(r"drawn (\S+\.jpg)", out)]
    try:
        if "No module named 'kd_landmarks'" in outputs[2]:
            pytest.fail("kd_landmarks is not installed from this checkout: run `pip install -r requirements.txt` "
                        "in the repository root (the README's set-up)")
        for proc, out in zip(procs, outputs):
            assert proc.returncode == 0, out[-3000:]
        assert len(drawn) == 2 and all(d.is_file() and (ROOT / "results") in d.parents for d in drawn), outputs[:2]
        assert "(68, 2)" in outputs[2].strip().splitlines()[-1], outputs[2][-2000:]
    finally:
        for d in drawn:
            if d.parent.parent == ROOT / "results":
                shutil.rmtree(d.parent, ignore_errors=True)


def test_readme_command_parser_sees_a_stale_flag():
    cmds = readme_commands("```bash\npython test.py --no-such-flag x \\\n    --mode kd  # c\n```\n")
    assert cmds == [("test.py", ["--no-such-flag", "x", "--mode", "kd"])]


def test_readme_paths_exist():
    """Every repository file or folder the README names in backticks or links exists."""
    text = README.read_text()
    named = set(re.findall(r"\]\(([^)#:]+)\)", text))
    named |= {p for p in re.findall(r"`([\w./-]+/[\w./-]*)`", text)
              if p.split("/")[0] in {"docs", "bench", "models", "tools", "tests", "data", "samples"}
              and not p.startswith(("data/prepared/", "data/synthetic/"))}   # made on first use
    missing = [p for p in sorted(named) if not (ROOT / p).exists()]
    assert not missing, missing


# ----------------------------------------------------------------------------------------------
# Models: the card names exactly the shipped files; user files stay out of git
# ----------------------------------------------------------------------------------------------


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


needs_git = pytest.mark.skipif(shutil.which("git") is None or _git("rev-parse").returncode != 0,
                               reason="not a git checkout")


@needs_git
def test_model_card_lists_exactly_the_tracked_model_files():
    tracked = {p[len("models/"):] for p in _git("ls-files", "models").stdout.split()
               if p.endswith((".keras", ".tflite")) and not p.startswith("models/detectors/")}
    carded = {m["file"] for m in json.loads(R.SCORES.read_text())["models"]}
    assert carded == tracked


@needs_git
def test_user_models_in_models_are_ignored_and_shipped_ones_are_not():
    user = ["models/students/mine.keras", "models/export/x_int8.tflite", "models/mine.keras"]
    assert _git("check-ignore", *user).stdout.split() == user
    shipped = ["models/" + m["file"] for m in json.loads(R.SCORES.read_text())["models"]]
    assert _git("check-ignore", *shipped, "models/scores.json").stdout.split() == []


def test_rows_over_different_seeds_are_paired_seed_by_seed():
    """KD over seeds 0-4, a control over seeds 0, 2, 4 only: the difference uses those three seeds
    (KD - control per seed: 7 - 8, 9 - 9, 11 - 10 -> mean 0, sd 1, t(0.975, 2) = 4.302653)."""
    kd = {"values": [7.0, 8.0, 9.0, 10.0, 11.0], "seeds": [0, 1, 2, 3, 4]}
    ctl = {"values": [8.0, 9.0, 10.0], "seeds": [0, 2, 4]}
    d = R.paired_by_seed(ctl, kd)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.0)
    assert (d["low"], d["high"]) == pytest.approx((-4.302653 / 3 ** 0.5, 4.302653 / 3 ** 0.5), abs=1e-5)


def test_merged_seed_study_keeps_each_seed_where_it_came_from(tmp_path):
    sys.path.insert(0, str(ROOT / "bench" / "studies" / "demo_seeds"))
    import merge_seeds

    for seed, nme in ((0, 7.5), (2, 8.5)):
        folder = tmp_path / "runs" / f"seed{seed}" / "student-l1"
        folder.mkdir(parents=True)
        (folder / "scores.json").write_text(json.dumps({"scores": {"full": {"nme_interocular": nme}}}))
    earlier = {"student-kd": {"full": {"values": [7.0, 8.0, 9.0], "mean": 8.0, "std": 1.0}},
               "student-l1": {"full": {"values": [1.0, 2.0, 3.0], "mean": 2.0, "std": 1.0}},
               "paired_vs_l2": {"student-kd": {"n": 3}}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    out = tmp_path / "merged.json"
    assert merge_seeds.main(["--runs", str(tmp_path / "runs"), "--fill", str(tmp_path / "earlier.json"),
                             "--fill-seeds", "0", "1", "2", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["student-l1"]["seeds"] == [0, 1, 2]
    assert merged["student-l1"]["full"]["values"] == [7.5, 2.0, 8.5]          # the runs win seed by seed
    assert merged["student-l1"]["from"] == ["runs", "earlier.json", "runs"]
    assert merged["student-kd"]["full"]["std"] == pytest.approx(1.0)
    assert "paired_vs_l2" not in merged
    with pytest.raises(Exception, match="exists"):
        merge_seeds.main(["--runs", str(tmp_path / "runs"), "--fill", str(tmp_path / "earlier.json"),
                          "--fill-seeds", "0", "1", "2", "--out", str(out)])
    # a later session merges onto that file: its seeds and each seed's origin are kept
    later = tmp_path / "runs2" / "seed4" / "student-l1"
    later.mkdir(parents=True)
    (later / "scores.json").write_text(json.dumps({"scores": {"full": {"nme_interocular": 6.5}}}))
    out2 = tmp_path / "merged2.json"
    assert merge_seeds.main(["--runs", str(tmp_path / "runs2"), "--fill", str(out), "--runs-label", "later",
                             "--out", str(out2)]) == 0
    merged2 = json.loads(out2.read_text())
    assert merged2["student-l1"]["seeds"] == [0, 1, 2, 4]
    assert merged2["student-l1"]["full"]["values"] == [7.5, 2.0, 8.5, 6.5]
    assert merged2["student-l1"]["from"] == ["runs", "earlier.json", "runs", "later"]
    assert merged2["student-kd"]["from"] == ["earlier.json"] * 3


def test_regime_table_pairs_kd_with_its_control_seed_by_seed(tmp_path):
    """KD 8, 9, 10 (seeds 0-2) against L1 over seeds 0-4: the paired seeds (L1 mean 10) give -1, -1, -1,
    a difference clear of 0 (sd 0, so the interval is the point), printed in bold."""
    (tmp_path / "kd.json").write_text(json.dumps({"student-kd": {"full": {"values": [8.0, 9.0, 10.0]}}}))
    (tmp_path / "l1.json").write_text(json.dumps({"student-l1": {"full": {"values": [9.0, 10.0, 11.0, 0.0, 0.0]},
                                                                   "seeds": [0, 1, 2, 3, 4]}}))
    (tmp_path / "results.json").write_text(json.dumps({"regimes": {"metric": "full", "rows": [
        {"label": "narrow", "kd": {"source": "kd.json", "key": "student-kd"},
         "control": {"source": "l1.json", "key": "student-l1"}}]}}))
    text = R.teacher_regimes(tmp_path / "results.json")
    assert "| narrow | 9.00 | 10.00 | **-1.00 (-1.00 to -1.00)** | 3 |" in text
