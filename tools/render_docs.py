"""Render the documents' result tables from the JSON files that hold the numbers.

Every figure a table shows is typed once, in a JSON file beside the run or study that made it
(`models/scores.json` for the shipped models, `bench/studies/<study>/results.json` and the
`demo.summarize_seeds` outputs it names for a study); this script writes the tables into the
Markdown documents, between marker lines:

    <!-- BEGIN rendered:NAME -->
    ... (written by this script: do not edit by hand)
    <!-- END rendered:NAME -->

    python tools/render_docs.py            # rewrite every rendered block that is out of date
    python tools/render_docs.py --check    # exit 1 (naming the blocks) if any is out of date; writes nothing
    python tools/render_docs.py --typed    # list (and count) X.XX% typed by hand that a JSON also holds

The documents searched are README.md, CHANGELOG.md, models/*.md, docs/**/*.md and bench/**/*.md.
tests/test_docs.py runs `--check`, so a table edited by hand, or a JSON changed without rendering,
fails the tests.

Adding a block:

* a plain table: put {"columns": [...], "rows": [[...], ...]} (and optionally "note": "...") under a
  key of a JSON file, and write the markers with NAME = `table:<path from the repo root>#<key>`,
  e.g. `table:bench/studies/my_study/results.json#main`; nothing to add here.
* one figure inside a sentence: `score:<model file stem>.<field>` renders that model's value from
  `models/scores.json` with two decimals, inline (no line break after the BEGIN marker), e.g.
  `<!-- BEGIN rendered:score:300w_tough.synthetic.full -->4.77<!-- END rendered:score:300w_tough.synthetic.full -->%`.
* one study figure inside a sentence: register the JSON cell that holds it in FIGURES and write
  `fig:NAME` inline the same way (its first number is rendered; `<cell>~N` in FIGURES takes its
  number N, from 0). A plain table's cell may name either kind: "{score:STEM.FIELD}", "{fig:NAME}".
* a computed table (means, confidence intervals, hashes...): write a function
  `def my_block() -> str` that reads its JSON and returns Markdown, register it in BLOCKS under
  the NAME, and put the markers in the documents that show it. Keep it a pure function of the
  files it reads, so `--check` is deterministic.

Rendering and checking need no TensorFlow (numpy and scipy only), so they are fast.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCORES = ROOT / "models" / "scores.json"
DEMO_SEEDS = ROOT / "bench" / "studies" / "demo_seeds"
DOCUMENTS = ("README.md", "CHANGELOG.md", "models/*.md", "docs/**/*.md", "bench/**/*.md")
BLOCK = re.compile(r"(<!-- BEGIN rendered:(?P<name>[^ ]+) -->\n?)(?P<body>.*?)(<!-- END rendered:(?P=name) -->)",
                   re.S)


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------


def md_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paired(values: Sequence[float], reference: Sequence[float]) -> Dict[str, float]:
    """reference - values over the same seeds: mean and 95% CI (t with n-1 degrees of freedom)."""
    from scipy import stats  # noqa: PLC0415

    d = np.asarray(reference, float) - np.asarray(values, float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half)}


def spread(values: Sequence[float]) -> str:
    """`mean ± sd [min-max]`, sample standard deviation."""
    v = np.asarray(values, float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} [{v.min():.2f}-{v.max():.2f}]"


def signed(x: float) -> str:
    return f"{x:+.2f}"


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------
# The demo over five seeds (bench/studies/demo_seeds/results.json)
# ----------------------------------------------------------------------------------------------


def seed_rows(spec: dict, folder: Path = DEMO_SEEDS) -> List[dict]:
    """Each row of spec with its per-seed values: from the first source holding its key, else its own."""
    sources = [load(folder / s) for s in spec.get("sources", [])]
    out = []
    for row in spec["rows"]:
        entry = next((s[row["key"]] for s in sources if row["key"] in s), None)
        values = entry[spec["metric"]]["values"] if entry is not None else row.get("values")
        if values is None:
            raise SystemExit(f"{folder / 'results.json'}: no values for {row['key']!r}: add a source "
                             f"that holds it or give the row 'values'")
        # a source may name the seeds it holds (merge_seeds.py); otherwise seeds 0, 1, ... in order
        seeds = (entry or {}).get("seeds") or row.get("seeds") or list(range(len(values)))
        out.append({**row, "values": [float(v) for v in values], "seeds": [int(x) for x in seeds],
                    "measured_here": entry is not None})
    return out


def paired_by_seed(row: dict, ref: dict) -> Dict[str, float]:
    """ref - row over the seeds both hold (`paired`), with n, the number of seeds paired."""
    common = [x for x in ref["seeds"] if x in row["seeds"]]
    pick = lambda r: [r["values"][r["seeds"].index(x)] for x in common]  # noqa: E731
    return {**paired(pick(row), pick(ref)), "n": len(common)}


def seeds_text(seeds: Sequence[int]) -> str:
    return f"seeds {seeds[0]}-{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) \
        else "seeds " + ", ".join(map(str, seeds))


def what_teachers_add(path: Path = DEMO_SEEDS / "results.json") -> str:
    spec = load(path)["what_teachers_add"]
    rows = seed_rows(spec, path.parent)
    ref = next(r for r in rows if r["key"] == spec["reference"])
    table = []
    for r in rows:
        diff = "" if r is ref else paired_by_seed(r, ref)
        name = r["label"] + ("" if r["measured_here"] else " *")
        mean = spread(r["values"])
        per_seed = ", ".join(f"{v:.2f}" for v in r["values"])
        if r["seeds"] != ref["seeds"]:
            per_seed += f" ({seeds_text(r['seeds'])})"
        table.append([f"**{name}**" if r is ref else name,
                      f"**{mean}**" if r is ref else mean, per_seed,
                      "" if r is ref else f"{signed(diff['mean'])} ({signed(diff['low'])} to {signed(diff['high'])})"
                      + ("" if diff["n"] == len(ref["seeds"]) else f", {diff['n']} seeds")])
    text = md_table(["model", f"NME {spec['metric']} %, mean ± sd [min-max]",
                     f"per seed ({seeds_text(ref['seeds'])})", "KD minus this row (95% CI)"], table)
    notes = [f"\\* {r['note']}." for r in rows if not r["measured_here"] and r.get("note")]
    return text + "".join(f"\n{n}\n" for n in notes)


def what_teachers_add_summary(path: Path = DEMO_SEEDS / "results.json") -> str:
    """One sentence: the control's per-seed values and KD minus control, with what the CI says."""
    spec = load(path)["what_teachers_add"]
    rows = {r["key"]: r for r in seed_rows(spec, path.parent)}
    ref, ctl = rows[spec["reference"]], rows[spec["control"]]
    d = paired_by_seed(ctl, ref)
    verdict = ("what the teachers add is not distinguishable from zero at the demo's budget"
               if d["low"] <= 0 <= d["high"] else
               "the teachers help at the demo's budget" if d["high"] < 0 else
               "the teachers cost accuracy at the demo's budget")
    seeds = ", ".join(f"{v:.2f}" for v in ctl["values"])
    return (f"{ctl.get('summary_label', ctl['label'])} gave {seeds}% for seeds 0-{len(ctl['values']) - 1} "
            f"against {', '.join(f'{v:.2f}' for v in ref['values'])}% for KD, so KD - {ctl.get('short', 'control')} = "
            f"**{d['mean']:.2f}** (95% CI {d['low']:.2f} to {signed(d['high'])}): {verdict}.\n")


def teacher_sets(path: Path = DEMO_SEEDS / "results.json") -> str:
    spec = load(path)["teacher_sets"]
    metric = spec["metric"]
    keys = ["student-kd", "student-tough-only", "student-tolerant-only", "student-l2"]
    table = []
    for row in spec["rows"]:
        data = load(path.parent / row["source"])
        cells = [f"{data[k][metric]['mean']:.2f} ± {data[k][metric]['std']:.2f}" if k in data else "-" for k in keys]
        d = paired(data["student-l2"][metric]["values"], data["student-kd"][metric]["values"])
        table.append([row["label"], f"{data['teacher-tough'][metric]['mean']:.2f} / "
                      f"{data['teacher-tolerant'][metric]['mean']:.2f}", *cells,
                      f"{signed(d['mean'])} ({signed(d['low'])} to {signed(d['high'])})", f"`{row['source']}`"])
    return md_table(["teachers of", "Tough / Tolerant", "KD", "Tough only", "Tolerant only", "L2",
                     "KD - L2 (95% CI)", "data"], table)


def _seed_entry(folder: Path, ref: dict, metric: str) -> dict:
    """{"values", "seeds"} of one model in one seed-study file: ref = {"source", "key"}."""
    entry = load(folder / ref["source"])[ref["key"]]
    values = entry[metric]["values"]
    return {"values": [float(v) for v in values], "seeds": entry.get("seeds") or list(range(len(values)))}


def teacher_regimes(path: Path = DEMO_SEEDS / "results.json") -> str:
    """KD minus the no-teacher control of the same shape (L1), regime by regime, paired by seed."""
    spec = load(path)["regimes"]
    table = []
    for row in spec["rows"]:
        kd = _seed_entry(path.parent, row["kd"], spec["metric"])
        ctl = _seed_entry(path.parent, row["control"], spec["metric"])
        d = paired_by_seed(ctl, kd)
        clear = d["high"] < 0 or d["low"] > 0
        common = [x for x in kd["seeds"] if x in ctl["seeds"]]
        mean = lambda r: np.mean([r["values"][r["seeds"].index(x)] for x in common])  # noqa: E731
        table.append([row["label"], f"{mean(kd):.2f}", f"{mean(ctl):.2f}",
                      f"{'**' if clear else ''}{signed(d['mean'])} ({signed(d['low'])} to {signed(d['high'])})"
                      f"{'**' if clear else ''}", str(d["n"]),
                      f"`{row['kd']['source']}` / `{row['control']['source']}`"])
    return md_table(["regime", "KD, mean NME % (paired seeds)", "control, mean NME %", "KD - control (95% CI)",
                     "seeds paired", "data (KD / control)"], table)


# ----------------------------------------------------------------------------------------------
# The shipped models (models/scores.json)
# ----------------------------------------------------------------------------------------------


def _real(m: dict) -> str:
    return f"{m['real']['mean']:.2f} / {m['real']['median']:.2f}" if "real" in m else "-"


def shipped_models(path: Path = SCORES) -> str:
    """The README's short table."""
    rows = [[f"`{m['file']}`", m["network"], f"{m['input']} px", f"{m['synthetic']['full']:.2f}",
             _real(m), mib(path.parent / m["file"])] for m in load(path)["models"]]
    return md_table(["file", "network", "input", "synthetic NME %", "real faces NME % (mean / median)",
                     "size"], rows)


def model_card(path: Path = SCORES) -> str:
    """models/README.md's table: every shipped file, its size and sha256 computed here."""
    rows = []
    for m in load(path)["models"]:
        f = path.parent / m["file"]
        rows.append([f"`{m['file']}`", m["network"], f"{m['input']} x {m['input']}", m["data"],
                     f"{m['images_seen']:,}", f"{m['synthetic']['full']:.2f}", _real(m), mib(f),
                     f"`{sha256(f)[:16]}`"])
    return md_table(["file", "network", "input", "training data", "images seen", "synthetic NME %",
                     "real NME % (mean / median)", "size", "sha256 (first 16)"], rows)


def model_commands(path: Path = SCORES) -> str:
    """One paragraph per shipped file: what it is and the commands that made it."""
    parts = []
    for m in load(path)["models"]:
        f = path.parent / m["file"]
        parts.append(f"**`{m['file']}`** ({m['date']}; sha256 `{sha256(f)}`). {m['about']}\n\n"
                     "```bash\n" + "\n".join(m["commands"]) + "\n```\n")
    return "\n".join(parts)


def scores_synthetic(path: Path = SCORES) -> str:
    data = load(path)
    rows = []
    for m in data["models"] + data["references"]:
        if "synthetic" not in m:
            continue
        name = f"`{m['file']}`" if "file" in m else m["name"]
        for label, s in (("", m["synthetic"]), (", flip test", m.get("synthetic_flip"))):
            if s:
                rows.append([name + label + (f" ({m['input']} px test crops)" if m.get("input", 64) != 64 and not label else ""),
                             *(f"{s[k]:.2f}" if k in s else "-" for k in ("common", "challenging", "full", "fr")),
                             f"{s['auc']:.4f}" if "auc" in s else "-"])
    return md_table(["model", "NME common", "NME challenging", "NME full", "FR@0.1", "AUC@0.1"], rows)


def scores_real(path: Path = SCORES) -> str:
    data = load(path)
    rows = []
    for m in data["models"] + data["references"]:
        name = f"`{m['file']}`" if "file" in m else m["name"]
        if "real" in m:
            rows.append([name, _real(m), f"{m['cofw']:.2f}" if "cofw" in m else "-"])
        if "real_flip" in m:
            rows.append([name + ", flip test", _real({"real": m["real_flip"]}),
                         f"{m['cofw_flip']:.2f}" if "cofw_flip" in m else "-"])
    return md_table(["model", "7 real 68-point faces, NME % mean / median", "2 COFW faces (29 points), NME %"],
                    rows)


# ----------------------------------------------------------------------------------------------
# Registry and the rewrite
# ----------------------------------------------------------------------------------------------

BLOCKS: Dict[str, Callable[[], str]] = {
    "what_teachers_add": what_teachers_add,
    "what_teachers_add_summary": what_teachers_add_summary,
    "teacher_sets": teacher_sets,
    "teacher_regimes": teacher_regimes,
    "shipped_models": shipped_models,
    "model_card": model_card,
    "model_commands": model_commands,
    "scores_synthetic": scores_synthetic,
    "scores_real": scores_real,
}


# A cell of a plain table that shows a shipped model's score names it instead of typing it:
# "{score:300w_l2.synthetic.full}"; a study figure of FIGURES likewise: "{fig:tough_frozen}".
SCORE_REF = re.compile(r"\{(score|fig):([\w.]+)\}")


def plain_table(ref: str) -> str:
    """`table:<json path>#<key>`: the {"columns", "rows", "note"?} object at that key, as Markdown (a
    "{score:<stem>.<field>}" in a cell is that shipped model's figure from models/scores.json, a
    "{fig:NAME}" the study figure FIGURES names)."""
    file, _, key = ref.partition("#")
    spec = load(ROOT / file)[key]
    rows = [[SCORE_REF.sub(lambda m: render_block(f"{m.group(1)}:{m.group(2)}"), c) if isinstance(c, str) else c
             for c in row] for row in spec["rows"]]
    return md_table(spec["columns"], rows) + (f"\n{spec['note']}\n" if spec.get("note") else "")


def number(value: float, field: str) -> str:
    """A figure as the tables print it: an AUC with four decimals ("...synthetic.auc" -> 0.6921), the rest two."""
    return f"{value:.4f}" if field.split(".")[-1] == "auc" else f"{value:.2f}"


def score_value(ref: str, path: Path = SCORES) -> str:
    """`score:<file stem>.<field>[.<field>]`: one shipped model's figure from models/scores.json, e.g.
    `300w_kd.synthetic.full` -> "4.68", `300w_l2.real.median` -> "9.03"."""
    stem, _, fields = ref.partition(".")
    model = next((m for m in load(path)["models"] if Path(m["file"]).stem == stem), None)
    if model is None or not fields:
        raise SystemExit(f"rendered block score:{ref}: no shipped model {stem!r} with a field in {path}")
    value = model
    for key in fields.split("."):
        if not isinstance(value, dict) or key not in value:
            raise SystemExit(f"rendered block score:{ref}: {path} has no {fields!r} for {model['file']}")
        value = value[key]
    return number(value, fields)


# Study figures the narratives quote, each by the JSON cell that holds it (the first number of the cell):
# `<!-- BEGIN rendered:fig:NAME -->6.70<!-- END rendered:fig:NAME -->` inside a sentence.
FIGURES = {
    "tolerant_floor": "bench/studies/tolerant_floor/results.json#tolerant_floor.rows.0.1",
    "tolerant_floor_aligned": "bench/studies/tolerant_floor/results.json#tolerant_floor_2.rows.0.1",
    "tough_frozen": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.2",
    "tolerant_frozen": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.2",
    "tough_f84aebe": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.0.4",
    "tolerant_f84aebe": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.4.4",
    "tough_9051ac6": "bench/studies/sim_to_real/results.json#earlier_models.rows.6.2",
    "tolerant_9051ac6": "bench/studies/sim_to_real/results.json#earlier_models.rows.7.2",
    "tough_one_frozen_epoch": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.2.4",
    "tough_one_trained_epoch": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.1.4",
    "tough_f84aebe_as_trained": "bench/studies/batchnorm/results.json#precise_bn.rows.0.3",
    "tolerant_f84aebe_as_trained": "bench/studies/batchnorm/results.json#precise_bn.rows.1.3",
    "demo_kd_earlier": "bench/studies/sim_to_real/results.json#earlier_models.rows.8.2",
    "demo_l2_earlier": "bench/studies/sim_to_real/results.json#earlier_models.rows.9.2",
    # cells the histories quote (docs/results/*.md), named TABLE.rROWcCOL, nN for the cell's number N:
    "tolerant_floor.r2c1": "bench/studies/tolerant_floor/results.json#tolerant_floor.rows.2.1",
    "freeze_batchnorm_3.r1c1n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.1~1",
    "tolerant_floor_2.r1c2": "bench/studies/tolerant_floor/results.json#tolerant_floor_2.rows.1.2",
    "tolerant_floor_2.r3c2": "bench/studies/tolerant_floor/results.json#tolerant_floor_2.rows.3.2",
    "tolerant_floor_2.r2c2": "bench/studies/tolerant_floor/results.json#tolerant_floor_2.rows.2.2",
    "freeze_batchnorm_2.r0c1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.0.1",
    "freeze_batchnorm_2.r0c2": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.0.2",
    "freeze_batchnorm_2.r0c2n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.0.2~1",
    "freeze_batchnorm_2.r1c1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.1",
    "freeze_batchnorm_2.r1c2": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.2",
    "freeze_batchnorm_2.r1c2n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.2~1",
    "freeze_batchnorm_2.r1c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.3",
    "earlier_models.r1c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.1.3",
    "earlier_models.r1c3n1": "bench/studies/sim_to_real/results.json#earlier_models.rows.1.3~1",
    "freeze_batchnorm.r1c1": "bench/studies/batchnorm/results.json#freeze_batchnorm.rows.1.1",
    "freeze_batchnorm.r1c2": "bench/studies/batchnorm/results.json#freeze_batchnorm.rows.1.2",
    "freeze_batchnorm.r0c1": "bench/studies/batchnorm/results.json#freeze_batchnorm.rows.0.1",
    "freeze_batchnorm_2.r1c1n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.1~1",
    "freeze_batchnorm_2.r0c1n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.0.1~1",
    "tolerant_floor.r2c2": "bench/studies/tolerant_floor/results.json#tolerant_floor.rows.2.2",
    "tolerant_floor.r1c2": "bench/studies/tolerant_floor/results.json#tolerant_floor.rows.1.2",
    "freeze_batchnorm_3.r0c1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.1",
    "freeze_batchnorm_3.r0c1n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.1~1",
    "freeze_batchnorm_3.r1c1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.1",
    "learning_curves_long.r2c5": "bench/studies/learning_curves/results.json#learning_curves_long.rows.2.5",
    "learning_curves_long.r3c5": "bench/studies/learning_curves/results.json#learning_curves_long.rows.3.5",
    "precise_bn.r0c2": "bench/studies/batchnorm/results.json#precise_bn.rows.0.2",
    "precise_bn.r0c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.0.2~2",
    "precise_bn.r1c2": "bench/studies/batchnorm/results.json#precise_bn.rows.1.2",
    "precise_bn.r1c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.1.2~2",
    "precise_bn.r0c3n1": "bench/studies/batchnorm/results.json#precise_bn.rows.0.3~1",
    "precise_bn.r1c3n1": "bench/studies/batchnorm/results.json#precise_bn.rows.1.3~1",
    "freeze_batchnorm_4.r2c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.2.3",
    "freeze_batchnorm_4.r1c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.1.3",
    "freeze_batchnorm_4.r3c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.3.3",
    "freeze_batchnorm_4.r3c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.3.4",
    "freeze_batchnorm_4.r5c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.5.3",
    "freeze_batchnorm_4.r5c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.5.4",
    "learning_curves_long.r0c5": "bench/studies/learning_curves/results.json#learning_curves_long.rows.0.5",
    "converged_students.r0c2": "bench/studies/learning_curves/results.json#converged_students.rows.0.2",
    "converged_kd": "bench/studies/converged_regime/results.json#progress.rows.4.5",
    "converged_l1": "bench/studies/converged_regime/results.json#progress.rows.3.5",
    "precise_bn.r2c3": "bench/studies/batchnorm/results.json#precise_bn.rows.2.3",
    "learning_curves_long.r1c5": "bench/studies/learning_curves/results.json#learning_curves_long.rows.1.5",
    "precise_bn.r4c2": "bench/studies/batchnorm/results.json#precise_bn.rows.4.2",
    "precise_bn.r3c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.3.2~2",
    "precise_bn.r4c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.4.2~2",
    "precise_bn.r3c3": "bench/studies/batchnorm/results.json#precise_bn.rows.3.3",
    "precise_bn.r4c3n2": "bench/studies/batchnorm/results.json#precise_bn.rows.4.3~2",
    "precise_bn.r7c2": "bench/studies/batchnorm/results.json#precise_bn.rows.7.2",
    "precise_bn.r6c2": "bench/studies/batchnorm/results.json#precise_bn.rows.6.2",
    "precise_bn.r7c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.7.2~2",
    "converged_students.r1c2": "bench/studies/learning_curves/results.json#converged_students.rows.1.2",
    "precise_bn.r6c3n2": "bench/studies/batchnorm/results.json#precise_bn.rows.6.3~2",
    "precise_bn.r8c3n2": "bench/studies/batchnorm/results.json#precise_bn.rows.8.3~2",
    "precise_bn.r11c2n2": "bench/studies/batchnorm/results.json#precise_bn.rows.11.2~2",
    "dev_report.r1c2n1": "bench/studies/sim_to_real/results.json#dev_report.rows.1.2~1",
    "dev_report.r1c2n3": "bench/studies/sim_to_real/results.json#dev_report.rows.1.2~3",
    "dev_report.r1c3n2": "bench/studies/sim_to_real/results.json#dev_report.rows.1.3~2",
    "dev_report.r5c3": "bench/studies/sim_to_real/results.json#dev_report.rows.5.3",
    "dev_report.r6c3": "bench/studies/sim_to_real/results.json#dev_report.rows.6.3",
    "earlier_models.r5c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.5.3",
    "dev_report.r1c3": "bench/studies/sim_to_real/results.json#dev_report.rows.1.3",
    "dev_report.r1c1": "bench/studies/sim_to_real/results.json#dev_report.rows.1.1",
    "earlier_models.r0c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.0.3",
    "earlier_models.r0c3n1": "bench/studies/sim_to_real/results.json#earlier_models.rows.0.3~1",
    "earlier_models.r2c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.2.3",
    "earlier_models.r2c3n1": "bench/studies/sim_to_real/results.json#earlier_models.rows.2.3~1",
    "earlier_models.r3c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.3.3",
    "earlier_models.r3c3n1": "bench/studies/sim_to_real/results.json#earlier_models.rows.3.3~1",
    "earlier_models.r4c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.4.3",
    "earlier_models.r4c3n1": "bench/studies/sim_to_real/results.json#earlier_models.rows.4.3~1",
    "earlier_models.r6c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.6.3",
    "earlier_models.r7c3": "bench/studies/sim_to_real/results.json#earlier_models.rows.7.3",
    "sim_to_real.r0c5": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.5",
    "sim_to_real.r0c7": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.7",
    "sim_to_real.r0c10": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.10",
    "sim_to_real.r0c12": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.12",
    "sim_to_real.r10c12": "bench/studies/sim_to_real/results.json#sim_to_real.rows.10.12",
    "sim_to_real.r2c5": "bench/studies/sim_to_real/results.json#sim_to_real.rows.2.5",
    "sim_to_real.r2c7": "bench/studies/sim_to_real/results.json#sim_to_real.rows.2.7",
    "sim_to_real.r3c5": "bench/studies/sim_to_real/results.json#sim_to_real.rows.3.5",
    "sim_to_real.r3c7": "bench/studies/sim_to_real/results.json#sim_to_real.rows.3.7",
    "sim_to_real.r2c2": "bench/studies/sim_to_real/results.json#sim_to_real.rows.2.2",
    "sim_to_real.r2c4": "bench/studies/sim_to_real/results.json#sim_to_real.rows.2.4",
    "sim_to_real.r3c2": "bench/studies/sim_to_real/results.json#sim_to_real.rows.3.2",
    "sim_to_real.r3c4": "bench/studies/sim_to_real/results.json#sim_to_real.rows.3.4",
    "sim_to_real.r0c2": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.2",
    "sim_to_real.r0c4": "bench/studies/sim_to_real/results.json#sim_to_real.rows.0.4",
    "sim_to_real.r1c2": "bench/studies/sim_to_real/results.json#sim_to_real.rows.1.2",
    "sim_to_real.r1c4": "bench/studies/sim_to_real/results.json#sim_to_real.rows.1.4",
    "sim_to_real.r1c5": "bench/studies/sim_to_real/results.json#sim_to_real.rows.1.5",
    "sim_to_real.r1c7": "bench/studies/sim_to_real/results.json#sim_to_real.rows.1.7",
    "dev_report.r7c2": "bench/studies/sim_to_real/results.json#dev_report.rows.7.2",
    "dev_report.r0c2": "bench/studies/sim_to_real/results.json#dev_report.rows.0.2",
    "dev_report.r7c3": "bench/studies/sim_to_real/results.json#dev_report.rows.7.3",
    "dev_report.r0c3": "bench/studies/sim_to_real/results.json#dev_report.rows.0.3",
    "dev_report.r0c2n2": "bench/studies/sim_to_real/results.json#dev_report.rows.0.2~2",
    "dev_report.r0c3n2": "bench/studies/sim_to_real/results.json#dev_report.rows.0.3~2",
    "randomized_renders.r0c11n1": "bench/studies/sim_to_real/results.json#randomized_renders.rows.0.11~1",
    "randomized_renders.r0c11n2": "bench/studies/sim_to_real/results.json#randomized_renders.rows.0.11~2",
    "randomized_renders.r0c12": "bench/studies/sim_to_real/results.json#randomized_renders.rows.0.12",
    "sim_to_real_2.r0c8": "bench/studies/sim_to_real/results.json#sim_to_real_2.rows.0.8",
    "sim_to_real_2.r0c9": "bench/studies/sim_to_real/results.json#sim_to_real_2.rows.0.9",
    "sim_to_real_2.r0c2": "bench/studies/sim_to_real/results.json#sim_to_real_2.rows.0.2",
    "sim_to_real_2.r0c3": "bench/studies/sim_to_real/results.json#sim_to_real_2.rows.0.3",
    "bn_fragility.r2c3": "bench/studies/batchnorm/results.json#bn_fragility.rows.2.3",
    "bn_fragility.r2c3n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.2.3~1",
    "bn_fragility.r2c4": "bench/studies/batchnorm/results.json#bn_fragility.rows.2.4",
    "bn_fragility.r2c4n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.2.4~1",
    "bn_fragility.r0c4": "bench/studies/batchnorm/results.json#bn_fragility.rows.0.4",
    "bn_fragility.r0c3": "bench/studies/batchnorm/results.json#bn_fragility.rows.0.3",
    "bn_fragility.r4c3": "bench/studies/batchnorm/results.json#bn_fragility.rows.4.3",
    "bn_fragility.r4c3n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.4.3~1",
    "bn_fragility.r4c4": "bench/studies/batchnorm/results.json#bn_fragility.rows.4.4",
    "bn_fragility.r4c4n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.4.4~1",
    "bn_fragility.r3c3": "bench/studies/batchnorm/results.json#bn_fragility.rows.3.3",
    "bn_fragility.r3c3n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.3.3~1",
    "bn_fragility.r3c4": "bench/studies/batchnorm/results.json#bn_fragility.rows.3.4",
    "bn_fragility.r3c4n1": "bench/studies/batchnorm/results.json#bn_fragility.rows.3.4~1",
    "freeze_batchnorm_5.r5c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.5.3",
    "freeze_batchnorm_5.r5c2": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.5.2",
    "freeze_batchnorm_5.r5c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.5.4",
    "freeze_batchnorm_5.r5c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.5.4~2",
    "freeze_batchnorm_5.r5c4n3": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.5.4~3",
    "freeze_batchnorm_5.r10c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.10.3",
    "freeze_batchnorm_5.r10c2": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.10.2",
    "freeze_batchnorm_5.r10c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.10.4",
    "freeze_batchnorm_5.r10c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.10.4~2",
    "freeze_batchnorm_5.r10c4n3": "bench/studies/batchnorm/results.json#freeze_batchnorm_5.rows.10.4~3",
    "freeze_batchnorm_4.r0c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.0.3",
    "precise_bn.r5c3": "bench/studies/batchnorm/results.json#precise_bn.rows.5.3",
    "precise_bn.r5c3n1": "bench/studies/batchnorm/results.json#precise_bn.rows.5.3~1",
    "export_agreement.r4c3": "bench/studies/export_agreement/results.json#export_agreement.rows.4.3",
    # cells of docs/results/model_training.json's history tables
    "precise_bn.r4c3": "bench/studies/batchnorm/results.json#precise_bn.rows.4.3",
    "freeze_batchnorm_2.r1c3n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.3~1",
    "freeze_batchnorm_2.r1c3n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_2.rows.1.3~2",
    "freeze_batchnorm_3.r0c2n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.2~1",
    "freeze_batchnorm_3.r0c2n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.2~2",
    "freeze_batchnorm_3.r0c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.3",
    "freeze_batchnorm_3.r0c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.0.4",
    "freeze_batchnorm_3.r1c2n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.2~1",
    "freeze_batchnorm_3.r1c2n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.2~2",
    "freeze_batchnorm_3.r1c3": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.3",
    "freeze_batchnorm_3.r1c4": "bench/studies/batchnorm/results.json#freeze_batchnorm_3.rows.1.4",
    "freeze_batchnorm_4.r0c4n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.0.4~1",
    "freeze_batchnorm_4.r0c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.0.4~2",
    "freeze_batchnorm_4.r4c4n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.4.4~1",
    "freeze_batchnorm_4.r4c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.4.4~2",
    "tolerant_unaligned_common": "docs/results/model_training.json#synthetic_history.rows.16.1",
    "tolerant_unaligned_challenging": "docs/results/model_training.json#synthetic_history.rows.16.2",
    "tolerant_unaligned_fr": "docs/results/model_training.json#synthetic_history.rows.16.4",
    "tolerant_unaligned_auc": "docs/results/model_training.json#synthetic_history.rows.16.5",
    "freeze_batchnorm_4.r3c4n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.3.4~1",
    "freeze_batchnorm_4.r3c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.3.4~2",
    "freeze_batchnorm_4.r5c4n1": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.5.4~1",
    "freeze_batchnorm_4.r5c4n2": "bench/studies/batchnorm/results.json#freeze_batchnorm_4.rows.5.4~2",
    "dev_report.r0c2n1": "bench/studies/sim_to_real/results.json#dev_report.rows.0.2~1",
    "dev_report.r2c2n1": "bench/studies/sim_to_real/results.json#dev_report.rows.2.2~1",
    "dev_report.r3c2n1": "bench/studies/sim_to_real/results.json#dev_report.rows.3.2~1",
    "dev_report.r0c2n3": "bench/studies/sim_to_real/results.json#dev_report.rows.0.2~3",
    "dev_report.r2c2n3": "bench/studies/sim_to_real/results.json#dev_report.rows.2.2~3",
    "dev_report.r3c2n3": "bench/studies/sim_to_real/results.json#dev_report.rows.3.2~3",
    "dev_report.r0c3n3": "bench/studies/sim_to_real/results.json#dev_report.rows.0.3~3",
    "dev_report.r2c3n3": "bench/studies/sim_to_real/results.json#dev_report.rows.2.3~3",
    "dev_report.r3c3n3": "bench/studies/sim_to_real/results.json#dev_report.rows.3.3~3",
    "dev_report.r1c3n3": "bench/studies/sim_to_real/results.json#dev_report.rows.1.3~3",
    # the references scored beside the shipped models (models/scores.json)
    "mean_shape_synthetic": "models/scores.json#references.0.synthetic.full",
    "mean_shape_real": "models/scores.json#references.0.real.mean",
    "mean_shape_real_median": "models/scores.json#references.0.real.median",
    "mean_shape_cofw": "models/scores.json#references.0.cofw",
    "dlib_real": "models/scores.json#references.1.real.mean",
    "dlib_real_median": "models/scores.json#references.1.real.median",
    "dlib_cofw": "models/scores.json#references.1.cofw",
    "mediapipe_real": "models/scores.json#references.2.real.mean",
    "mediapipe_real_median": "models/scores.json#references.2.real.median",
    "mediapipe_cofw": "models/scores.json#references.2.cofw",
    "mean_shape_synthetic_common": "models/scores.json#references.0.synthetic.common",
    "mean_shape_synthetic_challenging": "models/scores.json#references.0.synthetic.challenging",
    "mean_shape_synthetic_fr": "models/scores.json#references.0.synthetic.fr",
    "mean_shape_synthetic_auc": "models/scores.json#references.0.synthetic.auc",
}


def figure(name: str) -> str:
    """`fig:NAME`: the first number of the JSON cell FIGURES[NAME] names, as the cell prints it; a
    reference ending in `~N` takes the cell's number N (from 0) instead: "6.06% / 34.87%"~1 -> 34.87."""
    if name not in FIGURES:
        raise SystemExit(f"rendered block fig:{name}: not in tools/render_docs.py FIGURES")
    file, _, where = FIGURES[name].partition("#")
    where, _, nth = where.partition("~")
    value = load(ROOT / file)
    for key in where.split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
    if isinstance(value, (int, float)) and not nth:
        return number(value, where)
    numbers = re.findall(r"(?<![\d.])\d+(?:\.\d+)?", str(value))
    if len(numbers) <= int(nth or 0):
        raise SystemExit(f"rendered block fig:{name}: {FIGURES[name]} holds no number {int(nth or 0)} ({value!r})")
    return numbers[int(nth or 0)]


def headline_figures(path: Path = SCORES) -> Dict[str, str]:
    """{"4.77": "teachers/300w_tough.keras synthetic full", ...}: every shipped model's synthetic and
    real-face NME, as the tables print them; a document types them only inside rendered blocks."""
    out = {}
    for m in load(path)["models"]:
        for field in ("synthetic.full", "synthetic_flip.full", "real.mean", "real.median",
                      "real_flip.mean", "real_flip.median"):
            try:
                out.setdefault(score_value(f"{Path(m['file']).stem}.{field}", path), f"{m['file']} {field}")
            except SystemExit:
                pass
    return out


def hand_typed(text: str, figures: Dict[str, str]) -> List[str]:
    """Each headline figure typed as a percentage outside the rendered blocks: "line N: 4.77% (what)"."""
    found = []
    for n, line in enumerate(outside_blocks(text).splitlines(), 1):
        for fig, what in figures.items():
            if re.search(rf"(?<![\d.]){re.escape(fig)}\s?%", line):
                found.append(f"line {n}: {fig}% ({what})")
    return found


# The unit a figure is quoted with, read just after its END marker: "%" or " points".
UNIT = re.compile(r"\s?%|\s(?:points?|pp)\b")


def outside_blocks(text: str) -> str:
    """The text with every rendered block's body blanked (its line breaks kept, so lines keep their numbers)."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" * m.group("body").count("\n") + m.group(4), text)


def marked_figures(texts: Sequence[str]) -> Dict[Tuple[str, str], str]:
    """{(figure, unit): marker name} for every inline score:/fig: marker of the texts that a unit
    follows, e.g. ("4.23", "%") -> "fig:tolerant_floor_2.r1c2": the figure in the context it was marked with."""
    out: Dict[Tuple[str, str], str] = {}
    for text in texts:
        for m in BLOCK.finditer(text):
            unit = UNIT.match(text, m.end())
            if m.group("name").startswith(("score:", "fig:")) and unit and "\n" not in m.group("body"):
                out.setdefault((m.group("body").strip(), "%" if "%" in unit.group(0) else " points"), m.group("name"))
    return out


def typed_again(text: str, marked: Dict[Tuple[str, str], str]) -> List[str]:
    """Each marked figure typed by hand with the same unit outside the rendered blocks:
    "line N: 4.23% (fig:tolerant_floor_2.r1c2)"."""
    found = []
    by_unit: Dict[str, Dict[str, str]] = {}
    for (fig, unit), name in marked.items():
        by_unit.setdefault(unit, {})[fig] = name
    for n, line in enumerate(outside_blocks(text).splitlines(), 1):
        for unit, figs in by_unit.items():
            tail = r"\s?%" if unit == "%" else r"\s(?:points?|pp)\b"
            for m in re.finditer(rf"(?<![\d.])(\d+\.\d+){tail}", line):
                if m.group(1) in figs:
                    found.append(f"line {n}: {m.group(1)}{'%' if unit == '%' else unit} ({figs[m.group(1)]})")
    return found


def json_percentages(root: Path = ROOT) -> Dict[str, str]:
    """{"6.06": "bench/studies/batchnorm/results.json#freeze_batchnorm", ...}: every figure with two
    decimals that a study's results.json types in a string (commands apart), and every score of
    models/scores.json; each with the first file and key holding it."""
    out: Dict[str, str] = {}

    def walk(value: object, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, where or str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, where)
        elif isinstance(value, str) and not value.startswith(("`", "python ")):    # not a command
            for m in re.finditer(r"(?<![\d.\w-])(\d+\.\d\d)(?![\d.])", value):
                out.setdefault(m.group(1), where)
        elif isinstance(value, float) and where in ("models", "references"):
            out.setdefault(f"{value:.2f}", where)

    for path in [root / "models" / "scores.json", *sorted(root.glob("bench/studies/*/results.json")),
                 *sorted(root.glob("docs/**/*.json"))]:
        walk(load(path), "")
        out.update({k: f"{path.relative_to(root)}#{v}" for k, v in out.items() if "#" not in v})
    return out


def typed_duplicates(paths: Sequence[Path], root: Path = ROOT) -> List[str]:
    """A wide net (`--typed`): each X.XX% typed outside rendered blocks that equals a figure some JSON
    holds (`json_percentages`). Many are equal by chance; the test checks the narrow rule (`typed_again`)."""
    figures = json_percentages(root)
    found = []
    for path in paths:
        for n, line in enumerate(outside_blocks(path.read_text()).splitlines(), 1):
            found += [f"{path.relative_to(root)}:{n}: {m.group(1)}% (also in {figures[m.group(1)]})"
                      for m in re.finditer(r"(?<![\d.])(\d+\.\d+)\s?%", line) if m.group(1) in figures]
    return found


def render_block(name: str) -> str:
    if name.startswith("table:"):
        return plain_table(name[len("table:"):])
    if name.startswith("score:"):
        return score_value(name[len("score:"):])
    if name.startswith("fig:"):
        return figure(name[len("fig:"):])
    if name not in BLOCKS:
        raise SystemExit(f"unknown rendered block {name!r}: register it in tools/render_docs.py BLOCKS "
                         f"or use table:<json>#<key>")
    return BLOCKS[name]()


def render_text(text: str, cache: Optional[dict] = None) -> str:
    """The document with every marked block rewritten (each block computed once per run)."""
    cache = {} if cache is None else cache

    def body(m: re.Match) -> str:
        name = m.group("name")
        if name not in cache:
            cache[name] = render_block(name)
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(body, text)


def documents(root: Path = ROOT) -> List[Path]:
    found = {p for pattern in DOCUMENTS for p in root.glob(pattern)}
    return sorted(p for p in found if p.is_file())


def front_documents(root: Path = ROOT) -> List[Path]:
    """The documents a reader meets: the README, docs/, the model card and scores, and each bench
    README. Not CHANGELOG.md (history, by date) nor a study's own results files (bench/**/<name>.md:
    what its script wrote, with the command, time and machine of the run)."""
    return [p for p in documents(root) if p.name != "CHANGELOG.md"
            and (p.relative_to(root).parts[0] != "bench" or p.name == "README.md")]


def stale_blocks(path: Path, cache: dict) -> List[str]:
    old = path.read_text()
    new = render_text(old, cache)
    if new == old:
        return []
    olds = {m.group("name"): m.group("body") for m in BLOCK.finditer(old)}
    return [m.group("name") for m in BLOCK.finditer(new) if olds.get(m.group("name")) != m.group("body")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="only check: exit 1, naming each out-of-date block, if any; write nothing")
    p.add_argument("--typed", action="store_true",
                   help="only list the X.XX%% figures typed by hand in the front documents that a JSON also "
                        "types (some equal by chance) and count them; write nothing")
    args = p.parse_args(argv)
    if args.typed:
        found = typed_duplicates(front_documents())
        print("\n".join(found + [f"{len(found)} typed figures equal to one a JSON holds"]))
        return 0
    cache: dict = {}
    stale = []
    for path in documents():
        names = stale_blocks(path, cache)
        if names and not args.check:
            path.write_text(render_text(path.read_text(), cache))
            print(f"rendered {path.relative_to(ROOT)}: {', '.join(names)}")
        stale += [f"{path.relative_to(ROOT)}: {n}" for n in names]
    if args.check and stale:
        print("out of date (run python tools/render_docs.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    if args.check:
        print("every rendered block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
