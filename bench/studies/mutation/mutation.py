"""Mutation run over the modules that decide what the repo computes (issue 18).

Each mutant is one small, realistic textual change (a regular expression and its replacement) to one
module: the flip tables and KD-Loss presets in configuration.py, kd_loss.py, asm_soft_landmarks.py,
the Distiller in kd_loss.py, the validation NME in training.py, and metrics.py. The script
copies the working tree (git's tracked and untracked-but-not-ignored files) into a temporary folder,
runs every test group once on the unchanged copy (all must pass), then applies the mutants one at a
time to the COPY, runs the fast tests that cover that module (`pytest -x`), and restores the file.
A mutant is *killed* when a test fails or errors, *survived* when all pass, *not applied* when its
pattern no longer matches the code (the list needs updating; it does not count in the score).
The source tree is never written to.

    python bench/studies/mutation/mutation.py                       # all mutants -> bench/studies/mutation/mutation.md
    python bench/studies/mutation/mutation.py --only K1,A1 --out /tmp/m.md
    python bench/studies/mutation/mutation.py --check               # which patterns still match, runs nothing

The first six mutants (I1-I6) are the six bugs that issue 18 found the suite let through.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])]  # bench/ (_common, peers), the repository

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = Path(__file__).resolve().with_name("mutation.md")

# ----------------------------------------------------------------------------------------------
# Test groups: the fast tests that cover each module (node ids or files, relative to the repo)
# ----------------------------------------------------------------------------------------------
PIN = "tests/test_pinned_paper.py::"
GEO = "tests/test_geometry.py::"
TRAIN = "tests/test_trainers.py::"
GROUPS = {
    "flip": [GEO + "test_flip_table_is_an_involution_with_the_midline_fixed",
             GEO + "test_mirrored_mean_shape_maps_onto_itself",
             GEO + "test_the_check_catches_the_original_wflw_bug",
             GEO + "test_flip_moves_dot_and_reindexes",
             PIN + "test_crossing_any_two_flip_pairs_worsens_the_mirror_fit",
             PIN + "test_300w_eyelid_points_map_onto_their_mirror_closely"],
    "kd": ["tests/test_kd_loss.py",
           PIN + "test_loss_presets_hold_the_method_table",
           PIN + "test_code_preset_is_the_default",
           PIN + "test_kd_loss_hand_computed_per_preset",
           PIN + "test_main_loss_gradient_at_e_equal_d_is_the_l1_slope"],
    "asm": ["tests/test_asm.py", PIN + "test_asm_outlier_lands_exactly_on_three_sqrt_lambda"],
    "distiller": [TRAIN + "test_distiller_updates_only_the_student",
                  TRAIN + "test_cached_and_on_the_batch_predictions_give_the_same_loss",
                  PIN + "test_distiller_teacher_targets_are_deterministic_inference_outputs"],
    "validation": [PIN + "test_validation_callback_logs_the_interocular_nme",
                   PIN + "test_training_run_selects_best_by_interocular_nme"],
    "metrics": ["tests/test_metrics.py",
                PIN + "test_validation_callback_logs_the_interocular_nme"],
}


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    pattern: str          # regular expression (re.M); the first match is replaced
    replacement: str      # re.sub replacement (\1 ... for groups)
    group: str            # key of GROUPS (several joined by '+')
    what: str


_T = r"(?:tf|ops|keras\.ops|np)"   # kd_loss may use tf.* or keras.ops.*

MUTANTS = [
    # --- the six bugs of issue 18 -------------------------------------------------------------
    Mutant("I1", "configuration.py", r"\(37, 44\), \(38, 43\)", "(37, 43), (38, 44)", "flip",
           "300W flip table: upper eyelid pairs crossed"),
    Mutant("I2a", "configuration.py", r'("code": LossConfig\(\s*beta=)0\.15', r"\g<1>0.2", "kd",
           "code preset: beta 0.15 -> 0.2"),
    Mutant("I2b", "configuration.py", r"alpha_neg_tol=-0\.40", "alpha_neg_tol=-0.45", "kd",
           "code preset: alpha_neg_tol -0.40 -> -0.45"),
    Mutant("I3", "asm_soft_landmarks.py", r"^CLIP_SIGMAS = 3\.0", "CLIP_SIGMAS = 2.0", "asm",
           "ASM clip at 2 sqrt(lambda) instead of 3"),
    Mutant("I4", "kd_loss.py", r"self\.tough\(x, training=False\)",
           "self.tough(x, training=True)", "distiller",
           "Distiller calls the Tough teacher with training=True (Dropout on)"),
    Mutant("I5", "training.py", r"mean_nme\(pred, self\.landmarks, self\.info\)",
           'mean_nme(pred, self.landmarks, self.info, "interpupil")', "validation",
           "validation NME inter-pupil instead of inter-ocular"),
    Mutant("I6", "kd_loss.py", r"where\(e <= d,", "where(e < d,", "kd",
           "main loss: e <= d -> e < d (gradient at e = d)"),
    # --- configuration.py: flip tables and normalisers -----------------------------------------
    Mutant("C1", "configuration.py", r"\(40, 47\), \(41, 46\)", "(40, 46), (41, 47)", "flip",
           "300W flip table: lower eyelid pairs crossed"),
    Mutant("C2", "configuration.py", r"\(49, 53\), \(50, 52\)", "(49, 52), (50, 53)", "flip",
           "300W flip table: outer upper lip pairs crossed"),
    Mutant("C3", "configuration.py", r"zip\(left, reversed\(right\)\)", "zip(left, right)", "flip",
           "mirror runs (jaw, brows) paired in the same order"),
    Mutant("C4", "configuration.py", r"\(65, 75\), \(66, 74\)", "(65, 74), (66, 75)", "flip",
           "WFLW flip table: eye contour pairs crossed"),
    Mutant("C6", "configuration.py", r"\(96, 97\)\]", "]", "flip",
           "WFLW flip table: pupils not swapped"),
    Mutant("C7", "configuration.py", r"interocular=\(\(36,\), \(45,\)\)", "interocular=((39,), (42,))",
           "metrics", "300W inter-ocular normaliser on the inner eye corners"),
    # --- configuration.py: KD-Loss presets -----------------------------------------------------
    Mutant("P1", "configuration.py", r"low_region=\"zero\", main_slope=3\.0",
           'low_region="zero", main_slope=1.0', "kd", "code preset: main slope c 3 -> 1"),
    Mutant("P2", "configuration.py", r"low_region=\"ramp\"", 'low_region="zero"', "kd",
           "paper preset: no ramp in the low-influence region"),
    Mutant("P4", "configuration.py", r'DEFAULT_LOSS_PRESET = "code"', 'DEFAULT_LOSS_PRESET = "paper"',
           "kd", "default preset paper instead of code"),
    # --- kd_loss.py ------------------------------------------------------------------------------
    Mutant("K1", "kd_loss.py", r"c \* d - " + _T + r"\.square\(d\)", "c * d", "kd",
           "main loss tail without - d^2 (discontinuous at e = d)"),
    Mutant("K2", "kd_loss.py", r"where\(e > t,", "where(e >= t,", "kd",
           "assistive weight: P on T' counted as positive region"),
    Mutant("K3", "kd_loss.py", r"where\(e >= bt,", "where(e > bt,", "kd",
           "assistive weight: P on B counted as low-influence region"),
    Mutant("K4", "kd_loss.py", r"(?s)(def reflect\(.*?G \+ )" + _T + r"\.sign\(P - G\) \* ", r"\g<1>",
           "kd", "reflection T' = G + |T - G| (sign of P - G dropped)"),
    Mutant("K5", "kd_loss.py", r"an \* " + _T + r"\.(?:math\.)?divide_no_nan\(e, bt\)", "an", "kd",
           "paper preset: constant alpha_neg instead of the ramp"),
    Mutant("K6", "kd_loss.py", r"cfg\.alpha_tol, cfg\.alpha_neg_tol, cfg\)",
           "cfg.alpha_tough, cfg.alpha_neg_tol, cfg)", "kd",
           "Tolerant assistive term with the Tough alpha"),
    Mutant("K7", "kd_loss.py", r"main_loss\(G, P, S if self\.needs_tolerant else A, cfg\)",
           "main_loss(G, P, A if self.needs_tough else S, cfg)", "kd",
           "kd mode: main loss's d from the Tough teacher"),
    Mutant("K8", "kd_loss.py", r"(mean\(" + _T + r"\.)square(\(y_pred - y_true\)\))", r"\g<1>abs\g<2>",
           "kd", "l2_loss is a mean absolute error"),
    Mutant("K9", "kd_loss.py", r"(d = " + _T + r"\.abs\()G - S\)", r"\g<1>P - S)", "kd",
           "main loss: d = |P - S| instead of |G - S|"),
    Mutant("K10", "kd_loss.py", r"(stop_gradient\()" + _T + r"\.where\(t > 0, w, zero\)", r"\g<1>w", "kd",
           "T = G: the weights do not vanish (METHOD.md edge case)"),
    # --- asm_soft_landmarks.py -------------------------------------------------------------------
    Mutant("A1", "asm_soft_landmarks.py", r"(searchsorted\(cum, float\(variance\) - 1e-12\)) \+ 1",
           r"\g<1>", "asm", "ASM keeps one component too few"),
    Mutant("A2", "asm_soft_landmarks.py", r"self\.variance < 1\.0", "self.variance <= 1.0", "asm",
           "ASM clips at variance 1.0 too (hard landmarks no longer returned)"),
    Mutant("A3", "asm_soft_landmarks.py", r"CLIP_SIGMAS \* np\.sqrt\(self\.eigenvalues\)",
           "CLIP_SIGMAS * self.eigenvalues", "asm", "ASM clip at 3 lambda (variance, not std)"),
    # --- kd_loss.py: the Distiller -------------------------------------------------------------
    Mutant("D1", "kd_loss.py", r"self\.tolerant\(x, training=False\)",
           "self.tolerant(x, training=True)", "distiller",
           "Distiller calls the Tolerant teacher with training=True"),
    Mutant("D2", "kd_loss.py", r"for p in \(a, s\)\)", "for p in (s, a))", "distiller",
           "Distiller swaps the Tough and Tolerant predictions"),
    Mutant("D3", "kd_loss.py", r"return self\.student\(x, training=training\)",
           "return self.student(x, training=False)", "distiller",
           "Distiller runs the student in inference mode (BatchNorm statistics frozen)"),
    Mutant("D4", "kd_loss.py", r"tracker\.update_state\(terms\[tracker\.name\]",
           'tracker.update_state(terms["total"]', "distiller",
           "Distiller logs the total as each KD-Loss term"),
    Mutant("D5", "kd_loss.py", r'cached\.get\("tough"\), cached\.get\("tolerant"\)',
           'cached.get("tolerant"), cached.get("tough")', "distiller",
           "Distiller swaps the cached teacher predictions"),
    # --- training.py: validation NME -------------------------------------------------------------
    Mutant("V1", "training.py", r'normaliser: str = "interocular"', 'normaliser: str = "interpupil"',
           "validation", "mean_nme defaults to inter-pupil"),
    Mutant("V2", "training.py", r"return float\(np\.mean\(nmes\)\)", "return float(np.median(nmes))",
           "validation", "validation NME is the median"),
    Mutant("V3", "training.py",
           r"(ValidationNME\(model, |val_landmarks = )data\.val_images\(\), data\.val_landmarks\(\)",
           r"\g<1>data.train_face_images(), data.train_face_landmarks()",
           "validation", "validation NME measured on the training faces"),
    # --- metrics.py ------------------------------------------------------------------------------
    Mutant("M1", "metrics.py", r"np\.linalg\.norm\(pred - gt, axis=-1\)\.mean\(axis=1\)",
           "np.abs(pred - gt).sum(axis=-1).mean(axis=1)", "metrics", "NME with L1 point errors"),
    Mutant("M2", "metrics.py", r"np\.mean\(nmes > threshold\)", "np.mean(nmes >= threshold)",
           "metrics", "failure rate counts NME equal to the threshold"),
    Mutant("M3", "metrics.py", r'(y = np\.searchsorted\(nmes, x), side="right"\)',
           r'\g<1>, side="left")', "metrics", "CED counts NME strictly below x"),
    Mutant("M4", "metrics.py", r"return area / threshold", "return area", "metrics",
           "AUC not divided by the threshold"),
    Mutant("M5", "metrics.py", r"left = gt\[:, list\(groups\[0\]\), :\]\.mean\(axis=1\)",
           "left = gt[:, list(groups[0])[0], :]", "metrics",
           "normaliser: left eye centre is its first point"),
    Mutant("M6", "metrics.py", r"\(t\[1:\] \+ t\[:-1\]\) / 2\.0 \* ced\[1:\]", "t[1:] * ced[1:]",
           "metrics", "authors' AUC: right end instead of the midpoint of each step"),
]


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def copy_tree(source: Path, dest: Path) -> int:
    """Copy git's tracked and untracked-but-not-ignored files of `source` into `dest`."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=source, check=True, capture_output=True).stdout.decode()
    count = 0
    for rel in sorted(set(filter(None, out.split("\0")))):
        src = source / rel
        if not src.is_file() or rel.startswith(("models/", "runs/")):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
        count += 1
    return count


def group_tests(group: str) -> list:
    tests = []
    for name in group.split("+"):
        tests += [t for t in GROUPS[name] if t not in tests]
    return tests


def run_tests(root: Path, tests: list, timeout: int, deselect=()) -> tuple:
    """(passed, seconds, first failing test id or reason)."""
    # one BLAS thread: on a shared, loaded machine threaded BLAS made test_asm.py's PCA 100x slower
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="3",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    for node in deselect:
        cmd += ["--deselect", node]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.time() - t0, f"timeout after {timeout} s"
    secs = time.time() - t0
    if proc.returncode == 0:
        return True, secs, ""
    text = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    reason = failed[0] if failed else text.strip().splitlines()[-1][:120] if text.strip() else \
        f"exit {proc.returncode}"
    return False, secs, reason


def apply(text: str, m: Mutant):
    new, n = re.subn(m.pattern, m.replacement, text, count=1, flags=re.M)
    return new if n and new != text else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO_ROOT),
                        help="working tree to copy and mutate (default: this repository; it is "
                             "never written to)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="Markdown report (default bench/studies/mutation/mutation.md)")
    parser.add_argument("--only", default="", help="comma-separated mutant ids (default: all)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test run (default 300)")
    parser.add_argument("--check", action="store_true",
                        help="only report which mutant patterns match the source; run no tests")
    args = parser.parse_args(argv)

    source = Path(args.source).resolve()
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only.split(",")]
    if args.check:
        missing = 0
        for m in chosen:
            ok = apply((source / m.file).read_text(), m) is not None
            missing += not ok
            print(f"{m.id:4s} {'matches' if ok else 'NO MATCH'}  {m.file}: {m.what}")
        return 1 if missing else 0

    started = dt.datetime.now(dt.timezone.utc)
    t_all = time.time()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                           capture_output=True, text=True).stdout.strip()
    rows = []
    deselected: list = []      # tests that fail on the unmutated copy (someone else's work in progress)
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        root = Path(tmp)
        n_files = copy_tree(source, root)
        print(f"copied {n_files} files of {source} to {root}", flush=True)
        groups = sorted({m.group for m in chosen})
        for g in groups:        # the unchanged copy must pass; tests that fail on it are left out
            for _ in range(6):
                ok, secs, why = run_tests(root, group_tests(g), args.timeout, deselected)
                print(f"baseline {g:12s} {'pass' if ok else 'FAIL ' + why} ({secs:.0f} s)",
                      flush=True)
                if ok or "::" not in why or why in deselected:
                    break
                deselected.append(why)
            if not ok:
                print("the unmutated tests fail; fix them before a mutation run", file=sys.stderr)
                return 2
        for m in chosen:
            path = root / m.file
            original = path.read_text()
            mutated = apply(original, m)
            if mutated is None:
                rows.append((m, "not applied", 0.0, "pattern no longer matches the code"))
                print(f"{m.id:4s} not applied", flush=True)
                continue
            path.write_text(mutated)
            try:
                ok, secs, why = run_tests(root, group_tests(m.group), args.timeout, deselected)
            finally:
                path.write_text(original)
            status = "survived" if ok else "killed"
            rows.append((m, status, secs, why))
            print(f"{m.id:4s} {status:8s} {secs:5.0f} s  {m.what}  {why}", flush=True)

    applied = [r for r in rows if r[1] != "not applied"]
    killed = sum(r[1] == "killed" for r in applied)
    score = 100.0 * killed / len(applied) if applied else float("nan")
    minutes = (time.time() - t_all) / 60
    cmd = "python bench/studies/mutation/mutation.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Mutation run (bench/studies/mutation/mutation.py)", "",
        f"`{cmd}`: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min wall on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), source {source} at {head}"
        f"{' with uncommitted changes' if dirty else ''}.", "",
        f"**Score: {killed} of {len(applied)} mutants killed ({score:.0f}%)**"
        + (f"; {len(rows) - len(applied)} not applied (pattern no longer matches)"
           if len(rows) != len(applied) else "") + ".", "",
        "Each mutant is applied alone to a temporary copy of the tree; the tests of its group run "
        "with `pytest -x` (groups in `GROUPS` of the script). I1-I6 are the six bugs of issue 18.", "",
        "| id | module | mutant | tests | result | s | first failing test |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, status, secs, why in rows:
        lines.append(f"| {m.id} | {m.file} | {m.what} | {m.group} | {status} | {secs:.0f} | "
                     f"{why.replace('tests/', '').replace('|', '/')} |")
    if deselected:
        lines += ["", "Left out because they failed on the unmutated copy: "
                  + ", ".join(f"`{d}`" for d in deselected) + "."]
    survivors = [r for r in rows if r[1] == "survived"]
    if survivors:
        lines += ["", "Survivors: " + ", ".join(f"{m.id} ({m.what})" for m, *_ in survivors) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    from results_json import record

    record(out)                                      # its table, as data (results.json)
    print(f"score {killed}/{len(applied)} ({score:.0f}%), {minutes:.1f} min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
