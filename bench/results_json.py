"""A study's numbers as data: the tables of its Markdown results file, in a JSON file beside it.

A study script writes its results Markdown (`_common.publish` / `write_results`: the command, time,
machine and load of the run, then its tables) and then calls `record(path, name)`: every table of
that file goes into `results.json` in the same folder, as {"columns": [...], "rows": [[...], ...]}
(the cells exactly as the Markdown prints them) under "<name>" (the first table), "<name>_2", ...,
with the run's header lines under "runs" -> "<name>". That is the schema tools/render_docs.py renders
(`<!-- BEGIN rendered:table:bench/studies/<study>/results.json#<key> -->`). Keys the file already holds
for other names (another script of the same study, tables transcribed before) are kept.

A results file written elsewhere (`--out FILE.md`, `--quick`) gets `FILE.tables.json` beside it
instead, so a user's own results.json is never touched.

    python bench/results_json.py bench/studies/tolerant_floor/tolerant_floor.md   # from a file already written
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

STUDIES = Path(__file__).resolve().parent / "studies"
sys.path.insert(0, str(STUDIES.parents[1]))     # the repository (safe_io)

HEADER = re.compile(r"^- (command|when|software): (.*)$")


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(markdown: str) -> List[Dict[str, object]]:
    """Every Markdown table of the text, in order: {"title": the nearest heading above it (or ""),
    "columns": header cells, "rows": body rows, each as many cells as the header}."""
    found, title = [], ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            title = line.lstrip("#").strip()
        if (line.startswith("|") and i + 1 < len(lines)
                and re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*\|?", lines[i + 1].strip())):
            columns = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _cells(lines[i])
                rows.append((cells + [""] * len(columns))[:len(columns)])
                i += 1
            found.append({"title": title, "columns": columns, "rows": rows})
            continue
        i += 1
    return found


def headers(markdown: str) -> List[Dict[str, str]]:
    """The "- command: ..." / "- when: ..." / "- software: ..." lines of each run in the file."""
    runs: List[Dict[str, str]] = []
    for line in markdown.splitlines():
        m = HEADER.match(line)
        if m is None and line.startswith("`python "):       # a results file that opens with its command
            runs.append({"command": line[1:].split("`")[0]})
        if m:
            if m.group(1) == "command" or not runs:
                runs.append({})
            runs[-1][m.group(1)] = m.group(2).strip().strip("`") if m.group(1) == "command" else m.group(2)
    return runs


def json_path_for(md_path: Path) -> Path:
    """results.json for a file in a study folder; FILE.tables.json beside any other."""
    md_path = Path(md_path).resolve()
    return md_path.parent / "results.json" if md_path.parent.parent == STUDIES \
        else md_path.with_name(md_path.stem + ".tables.json")


def merged(existing: dict, name: str, markdown: str, source: str) -> dict:
    """`existing` with every key of `name` replaced by the tables and runs of `markdown`."""
    out = {k: v for k, v in existing.items() if k != name and not re.fullmatch(rf"{re.escape(name)}_\d+", k)}
    for n, t in enumerate(tables(markdown), 1):
        out[name if n == 1 else f"{name}_{n}"] = {"columns": t["columns"], "rows": t["rows"],
                                                   "title": t["title"], "from": source}
    runs = dict(out.get("runs", {}))
    runs[name] = headers(markdown)
    out["runs"] = runs
    return out


def record(md_path, name: Optional[str] = None, json_path: Optional[Path] = None) -> Path:
    """Write the tables of the results file `md_path` into its JSON (json_path_for); returns that path."""
    import json

    from safe_io import atomic_write_json

    md_path = Path(md_path)
    name = name or md_path.stem
    out = Path(json_path) if json_path else json_path_for(md_path)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    source = md_path.name if out.parent == md_path.resolve().parent else str(md_path)
    atomic_write_json(out, merged(existing, name, md_path.read_text(), source))
    print(f"(tables written to {out})")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="results Markdown files (FILE.md) whose tables to write")
    args = p.parse_args(argv)
    for path in args.results:
        record(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
