"""Summarise a mutmut 3 run (mutants/*.meta) per module into docs/mutation/results.json.

    mutmut run "metrics*"                              # see docs/MUTATION.md
    python tools/mutation_report.py metrics --wall-s 180 [--show]

For each module named: the count of every mutmut status, the score (killed, timed-out and
type-check-caught mutants over all checked ones), the same score with the mutants argued equivalent
in docs/mutation/equivalent.json left out, and the surviving mutants (their diffs with --show). The
module's entry in results.json is replaced; the other modules' entries are kept. Run it in the folder
where mutmut ran (the repository root, or the copy it was run in).
"""
from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "mutation" / "results.json"
EQUIVALENT = REPO / "docs" / "mutation" / "equivalent.json"
KILLED = {"killed", "timeout", "caught by type check"}
AGAINST = {"survived", "no tests", "suspicious", "segfault"}


def module_summary(module: str, mutants_dir: Path, equivalent: dict, show: bool, only=None) -> dict:
    from mutmut import __version__ as mutmut_version
    from mutmut.stats import status_by_exit_code

    meta = json.loads((mutants_dir / f"{module}.py.meta").read_text())
    status = {k: status_by_exit_code[v] for k, v in meta["exit_code_by_key"].items()
              if not only or any(fnmatch.fnmatch(k, pat) for pat in only)}
    counts = Counter(status.values())
    checked = [k for k, s in status.items() if s in KILLED | AGAINST]
    killed = [k for k in checked if status[k] in KILLED]
    against = sorted(k for k in checked if status[k] in AGAINST)
    equiv = {k: equivalent[k] for k in against if k in equivalent}
    left = [k for k in against if k not in equiv]
    out = {
        "module": f"{module}.py", "mutmut": mutmut_version, "mutants": len(status),
        "counts": dict(sorted(counts.items())), "checked": len(checked), "killed": len(killed),
        "score": round(len(killed) / len(checked), 4) if checked else None,
        "argued_equivalent": equiv,
        "score_without_equivalent": (round(len(killed) / (len(checked) - len(equiv)), 4)
                                     if len(checked) > len(equiv) else None),
        "survivors": {k: status[k] for k in left},
    }
    if show:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        for k in against:
            print(f"# {k}: {status[k]}" + (f"  (equivalent: {equiv[k]})" if k in equiv else ""))
            print("\n".join(line for line in get_diff_for_mutant(k, path=Path(f"{module}.py")).splitlines()
                            if line[:1] in "+-" and line[:3] not in ("+++", "---")))
    return out


def score_table(modules: dict) -> dict:
    """The per-module score table of docs/MUTATION.md (a tools/render_docs.py `table:` block)."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    rows = [[m if m.endswith(")") else f"{m}.py", e["mutants"], e["checked"], e["killed"], pct(e["score"]),
             len(e["argued_equivalent"]), pct(e["score_without_equivalent"]), len(e["survivors"]),
             e["mutants"] - e["checked"]] for m, e in modules.items()]
    return {"columns": ["module", "mutants", "checked", "killed (timeouts included)", "score",
                        "argued equivalent", "score without them", "survivors left", "not run"],
            "rows": rows,
            "note": "score = killed / checked; written by tools/mutation_report.py"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("modules", nargs="+", help="module names as mutmut lists them, e.g. metrics kd_loss")
    p.add_argument("--mutants-dir", default="mutants", help="mutmut's scratch folder (default: mutants)")
    p.add_argument("--wall-s", type=float, default=None, help="wall time of the mutmut run, recorded as is")
    p.add_argument("--command", default=None, help="the mutmut command that was run (default: "
                                                   "mutmut run \"<module>*\")")
    p.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    p.add_argument("--label", default=None, help="key of the entry in the results file (default: the "
                                                  "module; one module only)")
    p.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                   help="count only the mutants matching these fnmatch patterns (a partial run)")
    p.add_argument("--out", default=str(RESULTS), help=f"results file (default: {RESULTS})")
    args = p.parse_args(argv)
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"modules": {}}
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    for m in args.modules:
        entry = module_summary(m, Path(args.mutants_dir), equivalent, args.show, args.only)
        if args.only:
            entry["mutants_counted"] = list(args.only)
        entry.update({"command": args.command or f'nice -n 10 mutmut run "{m}*"',
                      "wall_s": args.wall_s, "commit": commit,
                      "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
        results["modules"][args.label or m] = entry
        print(f"{m}: {entry['killed']}/{entry['checked']} killed (score {entry['score']}, "
              f"{entry['score_without_equivalent']} without {len(entry['argued_equivalent'])} "
              f"argued equivalent); {len(entry['survivors'])} survivors", file=sys.stderr)
    results["table"] = score_table(results["modules"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
