"""Mutation testing of one module with mutmut 3 and that module's fast tests (docs/MUTATION.md).

    pip install -r requirements-dev.txt
    nice -n 10 python tools/mutation_run.py metrics            # -> docs/mutation/results.json
    nice -n 10 python tools/mutation_run.py kd_loss --max-children 2

The working tree (git's tracked and untracked-but-not-ignored files, without models/, samples/,
bench/ and docs/) is copied into a scratch folder (default /tmp/kd-mutation-<module>); there a
setup.cfg names the module as mutmut's only source and SELECTION's tests as its test selection, and
`mutmut run` mutates the copy (mutmut runs, for each mutant, only the selected tests that call the
mutated function). The source tree is never written to, except the module's entry in
docs/mutation/results.json (tools/mutation_report.py). A later run in the same folder reuses
mutmut's cached results for unchanged functions.

mutmut can also be run directly in the repository root with setup.cfg's [mutmut] section (all the
modules below, one test selection); it then writes its scratch copy to mutants/.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

# module -> the fast tests that cover it (files or node ids), run by mutmut per mutant
SELECTION = {
    "metrics": ["tests/test_metrics.py",
                "tests/test_metrics_end_to_end.py::test_scores_from_hand_computed_landmarks",
                "tests/test_metrics_edges.py"],
    # the loss functions; the tests that run TensorFlow graphs (the Distiller's, tf.function) hang
    # in a forked worker, so they are GRAPH_TESTS, run with --isolation forkserver
    "kd_loss": ["tests/test_kd_loss.py", "tests/test_kd_loss_edges.py",
                "tests/test_pinned_paper.py::test_kd_loss_hand_computed_per_preset",
                "tests/test_pinned_paper.py::test_main_loss_gradient_at_e_equal_d_is_the_l1_slope"],
    "configuration": ["tests/test_configuration_pure.py", "tests/test_geometry.py",
                      "tests/test_pinned_paper.py::test_loss_presets_hold_the_method_table",
                      "tests/test_pinned_paper.py::test_code_preset_is_the_default",
                      "tests/test_metrics_end_to_end.py::test_scores_from_hand_computed_landmarks",
                      "tests/test_cli_help.py", "tests/test_configuration_edges.py"],
    "evaluation": ["tests/test_evaluation.py", "tests/test_metrics_end_to_end.py",
                   "tests/test_evaluation_edges.py"],
    "image_utility": ["tests/test_geometry.py", "tests/test_geometry_edges.py", "tests/test_crop_margin.py",
                      "tests/test_image_edges.py"],
    "asm_soft_landmarks": ["tests/test_asm.py", "tests/test_asm_edges.py"],
    # the readers of the official formats and the custom list
    "dataset_formats": ["tests/test_readers.py", "tests/test_fuzz_parsers.py", "tests/test_synthetic_readers.py",
                        "tests/test_readers_edges.py"],
    # prepare (crops, manifest, augmented copies) and the prepared-folder reader
    "data_util": ["tests/test_prepare.py", "tests/test_prepared_reader.py", "tests/test_crop_margin.py",
                  "tests/test_prepare_edges.py"],
}
# tests that run TensorFlow graphs (tf.function, train_on_batch): a worker forked from a process that
# already ran TensorFlow deadlocks or spins there, so they run only with --isolation forkserver
GRAPH_TESTS = [
    "tests/test_kd_loss.py::test_float32_inputs_and_tf_function",
    "tests/test_pinned_paper.py::test_distiller_teacher_targets_are_deterministic_inference_outputs",
    "tests/test_inference_mode.py::test_distiller_on_the_batch_teacher_predictions_are_inference_mode",
    "tests/test_kd_loss_edges.py::test_saving_a_distiller_saves_its_student",
    "tests/test_kd_loss_edges.py::test_calling_a_distiller_is_the_students_inference",
    "tests/test_kd_loss_edges.py::test_distiller_loss_with_plain_and_dict_targets",
    "tests/test_kd_loss_edges.py::test_distiller_save_passes_the_options_on",
    "tests/test_kd_loss_edges.py::test_distiller_uses_the_cached_teacher_predictions_of_the_batch",
    "tests/test_kd_loss_edges.py::test_distiller_logs_batch_size_weighted_terms",
    "tests/test_kd_loss_edges.py::test_distiller_loss_adds_the_students_regularisation",
    "tests/test_kd_loss_edges.py::test_distiller_calls_only_the_teachers_its_mode_needs",
    "tests/test_distiller.py::test_one_distiller_step_under_tensorflow",
]
# tests that read the module's source text, which mutmut rewrites (trampolines), or that train a
# model (tens of seconds per mutant; the trainers' own tests cover that path): deselected
SOURCE_TESTS = {
    "configuration": ["tests/test_configuration_pure.py::test_configuration_has_no_file_io_and_no_changing_state"],
    "asm_soft_landmarks": ["tests/test_asm.py::test_trainer_option_asm_align_reaches_the_soft_landmarks"],
}
SKIP_DIRS = ("models/", "samples/", "bench/", "docs/", "mutants/")


def copy_tree(dst: Path, from_head: bool = False) -> None:
    if from_head:                 # the last commit, without uncommitted edits
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "xf", "-", "-C", str(dst)], input=archive, check=True)
        for d in SKIP_DIRS:
            if d != "mutants/":       # mutmut's cache of the earlier run here (--rerun-survivors)
                shutil.rmtree(dst / d, ignore_errors=True)
        return
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in files:
        if not f or f.startswith(SKIP_DIRS) or not (REPO / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)


def write_config(work: Path, module: str, tests: list, isolation: str = "fork", skip=()) -> None:
    # one pytest argument a line (mutmut passes each line as one argument)
    deselect = [] if isolation == "forkserver" else [a for t in GRAPH_TESTS for a in ("--deselect", t)]
    deselect += [a for t in [*SOURCE_TESTS.get(module, []), *skip] for a in ("--deselect", t)]
    others = sorted(p.name for p in work.glob("*.py") if p.stem != module and not p.name.startswith("test"))
    lines = ["[mutmut]", "source_paths =", f"    {module}.py", "also_copy =", "    pytest.ini",
             *[f"    {o}" for o in others], "    data/", "    tools/",
             "pytest_add_cli_args =", "    -q", *[f"    {a}" for a in deselect],
             "pytest_add_cli_args_test_selection =",
             *[f"    {t}" for t in tests]]
    if isolation == "forkserver":      # each worker imports TensorFlow afresh (slow, fork-safe)
        # a worker's CPU limit is (test time + timeout_constant) x 15 x 2 s of CPU; importing
        # TensorFlow in every worker needs a larger constant than the default 1 s
        lines += ["process_isolation = forkserver", "forkserver_warmup = none", "timeout_constant = 30"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")
    (work / "pyproject.toml").unlink(missing_ok=True)     # mutmut would read [tool.mutmut] there first


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("module", choices=sorted(SELECTION), help="the module to mutate")
    p.add_argument("--work-dir", default=None, help="scratch copy (default /tmp/kd-mutation-<module>)")
    p.add_argument("--max-children", type=int, default=2, help="parallel mutmut workers (default 2)")
    p.add_argument("--fresh", action="store_true", help="start from a new copy (forget cached results)")
    p.add_argument("--no-report", action="store_true", help="do not update docs/mutation/results.json")
    p.add_argument("--mutants", nargs="+", default=None, metavar="PATTERN",
                   help="only these mutants (mutmut names or fnmatch patterns, e.g. "
                        "'kd_loss.x_*' for the module's functions, 'kd_loss.xǁDistillerǁ*' for a class)")
    p.add_argument("--isolation", choices=("fork", "forkserver"), default="fork",
                   help="mutmut's process_isolation: fork (fast) or forkserver (each worker imports "
                        "TensorFlow afresh; for tests that train a Keras model, which hang in a "
                        "forked worker) (default: fork)")
    p.add_argument("--deselect", nargs="+", default=[], metavar="NODEID",
                   help="tests to leave out (e.g. one that fails on the unchanged code: mutmut needs "
                        "a green selection)")
    p.add_argument("--from-head", action="store_true",
                   help="copy the last commit (git archive HEAD) instead of the working tree")
    p.add_argument("--label", default=None,
                   help="entry name in docs/mutation/results.json (default: the module), e.g. for a "
                        "partial run of some of its mutants")
    p.add_argument("--pending", action="store_true",
                   help="only the mutants (of --mutants, if given) that have no result yet in --work-dir")
    p.add_argument("--rerun-survivors", action="store_true",
                   help="run again only the mutants that survived the last run in --work-dir (after "
                        "adding tests); the others keep their results")
    args = p.parse_args(argv)
    work = Path(args.work_dir or f"/tmp/kd-mutation-{args.module}")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    keep = work / "mutants"
    if keep.exists():                        # refresh the sources, keep mutmut's cache
        for f in work.iterdir():
            if f.name != "mutants":
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(work, args.from_head)
    tests = SELECTION[args.module]
    if args.module == "kd_loss" and args.isolation == "forkserver":
        tests = tests + GRAPH_TESTS
    write_config(work, args.module, tests, args.isolation, args.deselect)
    cmd = ["mutmut", "run", "--max-children", str(args.max_children)] + list(args.mutants or [])
    if args.rerun_survivors or args.pending:
        import fnmatch
        import json

        from mutmut.stats import status_by_exit_code

        meta = json.loads((work / "mutants" / f"{args.module}.py.meta").read_text())
        wanted = ("survived", "no tests", "suspicious") if args.rerun_survivors else ("not checked",)
        cmd = cmd[:4] + sorted(k for k, v in meta["exit_code_by_key"].items()
                               if status_by_exit_code[v] in wanted
                               and (not args.mutants or any(fnmatch.fnmatch(k, m) for m in args.mutants)))
    print(f"{work}: {' '.join(cmd[:4])} [{len(cmd) - 4} named mutants]  (tests: {' '.join(tests)})",
          flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=work).returncode
    wall = round(time.time() - t0, 1)
    if rc != 0:
        print(f"mutmut exited with {rc}", file=sys.stderr)
        return rc
    if not args.no_report:
        import mutation_report

        cwd = Path.cwd()
        try:
            import os

            os.chdir(work)
            cmdline = " ".join(["nice -n 10 python tools/mutation_run.py"] + list(argv or sys.argv[1:]))
            extra = (["--label", args.label] if args.label else []) + \
                (["--only", *args.mutants] if args.mutants else [])
            mutation_report.main([args.module, "--wall-s", str(wall), "--show", "--command", cmdline,
                                  *extra])
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
