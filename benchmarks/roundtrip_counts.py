"""Round trip of ``loop2scan rewrite --write`` on whole installed packages, with counts.

For each package (jax and flax; torch and torch_xla too when they are
installed) a copy of its source tree is made in a temporary directory and
rewritten in place with :func:`loop2scan.api.run` (``Options(write=True)``,
what ``loop2scan rewrite PKG --write`` does).  Recorded per package and in
total:

* ``files``, ``loops``, ``rewritten``, ``declined`` (and ``declined_by_code``),
  ``not_candidates``, ``skipped``, ``files_changed``, ``errors`` (files that
  could not be processed), ``internal`` (loops declined with ``L2S901``),
  ``seconds`` (wall time of the ``--write`` run);
* the round-trip checks: rewritten files that do not parse or compile, files
  without a rewrite whose bytes changed anyway, files changed by a second
  ``--write``, temporary files left behind.

The result goes to ``benchmarks/results/roundtrip.json`` (no local path is
written) and a table to stdout; ``--diffs`` also prints the unified diff of
every rewrite, for review.

    .venv/bin/python benchmarks/roundtrip_counts.py [--jobs N] [--diffs] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
DEFAULT_OUT = os.path.join(BENCH_DIR, "results", "roundtrip.json")
CANDIDATES = ("jax", "flax", "torch", "torch_xla")
TEMP_SUFFIX = ".loop2scan.tmp"

for _path in (REPO_ROOT, BENCH_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from common import snapshot  # noqa: E402
from loop2scan import __version__ as LOOP2SCAN_VERSION  # noqa: E402
from loop2scan.api import Options, RunReport, run  # noqa: E402


def package_dir(name: str) -> str | None:
    """The installed package directory, found without importing it (None when absent)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        return None
    return os.path.dirname(os.path.realpath(spec.origin))


def version_of(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def counts(report: RunReport) -> dict:
    by_status: dict[str, int] = {}
    declined_by_code: dict[str, int] = {}
    for f in report.files:
        for loop in f.loops:
            by_status[loop.status] = by_status.get(loop.status, 0) + 1
            if loop.status == "declined":
                declined_by_code[loop.code] = declined_by_code.get(loop.code, 0) + 1
    return {
        "files": len(report.files),
        "loops": sum(by_status.values()),
        "rewritten": by_status.get("rewritten", 0),
        "declined": by_status.get("declined", 0),
        "declined_by_code": dict(sorted(declined_by_code.items())),
        "not_candidates": by_status.get("not-candidate", 0),
        "skipped": by_status.get("skipped", 0),
        "files_changed": sum(1 for f in report.files if f.changed),
        "errors": len(report.errors),
        "error_lines": [f"{f.path}: {f.error}" for f in report.errors],
        "internal": sum(1 for f in report.files for loop in f.loops if loop.code == "L2S901"),
    }


def round_trip(name: str, source_dir: str, jobs: int | None, show_diffs: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="l2s-roundtrip-") as tmp:
        # Paths in the report are relative to the temporary directory (no local path is kept).
        shutil.copytree(source_dir, os.path.join(tmp, name), symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        before = snapshot(tmp)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            start = time.perf_counter()
            report = run([name], Options(write=True, jobs=jobs))
            seconds = time.perf_counter() - start
            after = snapshot(".")
            again = run([name], Options(write=True, jobs=jobs))
            final = snapshot(".")
        finally:
            os.chdir(cwd)
        if show_diffs:
            for f in report.files:
                if f.changed:
                    sys.stdout.write(f.diff())
        written = {os.path.normpath(f.path) for f in report.files if f.written}
        changed = {rel for rel in before if after.get(rel) != before[rel]}
        unparsable = []
        for rel in sorted(changed):
            try:
                compile(ast.parse(after[rel], filename=rel), rel, "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as e:
                unparsable.append(f"{rel}: {type(e).__name__}: {e}")
        result = counts(report)
        result.update({
            "seconds": round(seconds, 2),
            "version": version_of(name),
            "files_written": len(written),
            "unparsable_rewritten": unparsable,
            "untouched_but_modified": sorted(changed - written),
            "written_but_unchanged": sorted(written - changed),
            "second_write_changed": sorted(rel for rel in final if final[rel] != after.get(rel)),
            "second_write_rewritten": again.count("rewritten"),
            "temp_files_left": sorted(rel for rel in final if rel.endswith(TEMP_SUFFIX)),
            "files_added_or_removed": sorted(set(before) ^ set(final)),
            "rewritten_loops": [f"{f.path}:{loop.line}" for f in report.files for loop in f.loops
                                if loop.status == "rewritten"],
        })
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--diffs", action="store_true", help="print the diff of every rewrite")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON result")
    parser.add_argument("packages", nargs="*", default=None,
                        help=f"packages to round-trip (default: those of {', '.join(CANDIDATES)} installed)")
    args = parser.parse_args(argv)

    names = args.packages or [n for n in CANDIDATES if package_dir(n) is not None]
    per_package = {}
    for name in names:
        source = package_dir(name)
        if source is None:
            print(f"{name}: not installed", file=sys.stderr)
            continue
        print(f"{name}: round trip ...", file=sys.stderr, flush=True)
        per_package[name] = round_trip(name, source, args.jobs, args.diffs)

    total: dict = {"declined_by_code": {}}
    for result in per_package.values():
        for key, value in result.items():
            if key == "declined_by_code":
                for code, n in value.items():
                    total[key][code] = total[key].get(code, 0) + n
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = round(total.get(key, 0) + value, 2)
            elif isinstance(value, list) and key != "rewritten_loops":
                total[key] = total.get(key, []) + value
    total["declined_by_code"] = dict(sorted(total["declined_by_code"].items()))
    problems = sum(len(total.get(key, [])) for key in (
        "error_lines", "unparsable_rewritten", "untouched_but_modified", "written_but_unchanged",
        "second_write_changed", "temp_files_left", "files_added_or_removed"))
    problems += total.get("internal", 0) + total.get("second_write_rewritten", 0)

    data = {
        "what": "loop2scan rewrite --write on copies of installed packages, then a second --write",
        "loop2scan": LOOP2SCAN_VERSION,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "packages": per_package,
        "total": total,
        "round_trip_ok": problems == 0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")

    keys = ("files", "loops", "rewritten", "declined", "not_candidates", "skipped", "files_changed",
            "errors", "internal", "seconds")
    print("| package | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, result in list(per_package.items()) + [("total", total)]:
        print(f"| {name} | " + " | ".join(str(result.get(k, 0)) for k in keys) + " |")
    print("declined by code: " + ", ".join(f"{c} {n}" for c, n in total["declined_by_code"].items()))
    print(f"round trip: {'ok' if problems == 0 else f'{problems} problem(s), see the JSON file'}")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
