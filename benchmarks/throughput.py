"""Throughput: a whole-tree preview of the installed jax + flax + optax sources,
and one large module.

Times, as subprocesses on N = all cores:

* ``loop2scan rewrite --no-diff -q --include-tests --jobs N <jax> <flax> <optax>``
  (preview: exit 1 when a rewrite is available; test files included, so that
  both sides read the same files), and
* ``benchmarks/libcst_parse.py --jobs N``: reading and parsing the same .py
  files with ``libcst.parse_module`` in a ``multiprocessing.Pool(N)``,

alternating which one goes first in each repetition.  One more, untimed,
``--format json`` run gives the counts of loops by status and code, and an
untimed in-process run with one job times every file (the slowest are
reported).

The large module (``--large-module FILE``, default the installed
``jax/_src/numpy/lax_numpy.py``): ``loop2scan rewrite --no-diff -q --jobs 1 FILE``
against ``libcst.parse_module`` of the same file, each in a fresh process
(start-up included on both sides).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile

from common import (BENCH_DIR, bench_env, log, loop2scan_command, loop2scan_command_name, machine_info, now_iso,
                    stats, timed_run, write_result)

TARGET_RATIO = 4.0
LARGE_TARGET = 3.0  # the large module: loop2scan at most 3x the time of parsing it with libcst
PACKAGES = ("jax", "flax", "optax")

SLOWEST = """
import json, sys, time
import loop2scan.api as api
times = {}
process = api.process_file
def timed(path, options):
    t = time.perf_counter()
    try:
        return process(path, options)
    finally:
        times[path] = time.perf_counter() - t
api.process_file = timed
api.run(sys.argv[1:], api.Options(jobs=1, include_tests=True))
print(json.dumps(sorted(times.items(), key=lambda kv: -kv[1])[:5]))
"""

PARSE_ONE = """
import sys, libcst
with open(sys.argv[1], encoding="utf-8") as f:
    libcst.parse_module(f.read())
"""


def package_dirs() -> list[str]:
    import importlib

    dirs = []
    for name in PACKAGES:
        mod = importlib.import_module(name)
        dirs.append(os.path.dirname(os.path.abspath(mod.__file__)))
    return dirs


def python_files(dirs: list[str]) -> list[str]:
    out = []
    for root in dirs:
        for d, subdirs, names in os.walk(root):
            subdirs.sort()
            out.extend(os.path.join(d, n) for n in sorted(names) if n.endswith(".py"))
    return out


def tree_size(files: list[str]) -> dict:
    lines = 0
    size = 0
    for p in files:
        with open(p, "rb") as f:  # also warms the page cache before the timed runs
            data = f.read()
        size += len(data)
        lines += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {"files": len(files), "lines": lines, "bytes": size}


def large_module(path: str, reps: int, env: dict) -> dict:
    """loop2scan on one large file against libcst parsing it, fresh processes."""
    l2s_cmd = loop2scan_command() + ["rewrite", "--no-diff", "-q", "--jobs", "1", path]
    parse_cmd = [sys.executable, "-c", PARSE_ONE, path]
    l2s, parse = [], []
    for r in range(reps):
        for which in (["loop2scan", "libcst"] if r % 2 == 0 else ["libcst", "loop2scan"]):
            wall, _ = timed_run(l2s_cmd if which == "loop2scan" else parse_cmd, ok_codes=(0, 1), env=env)
            (l2s if which == "loop2scan" else parse).append(wall)
            log(f"[throughput] large module rep {r + 1}/{reps} {which}: {wall:.2f} s")
    with open(path, "rb") as f:
        lines = f.read().count(b"\n")
    ratio = statistics.median(l2s) / statistics.median(parse)
    return {"file": os.path.basename(path), "lines": lines, "loop2scan_s": stats(l2s), "libcst_parse_s": stats(parse),
            "ratio_median": ratio,
            "target": {"description": f"loop2scan on the large module within {LARGE_TARGET:g}x of parsing it with "
                                      "libcst (median wall time, fresh processes)",
                       "value": ratio, "threshold": LARGE_TARGET, "pass": ratio <= LARGE_TARGET}}


def default_large_module() -> str:
    import jax

    return os.path.join(os.path.dirname(os.path.abspath(jax.__file__)), "_src", "numpy", "lax_numpy.py")


def run(quick: bool = False, large: str | None = None) -> dict:
    reps = 1 if quick else 3
    jobs = os.cpu_count() or 1
    dirs = package_dirs()
    files = python_files(dirs)
    size = tree_size(files)
    log(f"[throughput] {size['files']} files, {size['lines']} lines, {jobs} processes, {reps} repetition(s)")

    load_before = os.getloadavg()
    l2s_cmd = loop2scan_command() + ["rewrite", "--no-diff", "-q", "--include-tests", "--jobs", str(jobs), *dirs]
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="l2s-bench-") as tmp:
        listing = os.path.join(tmp, "files.txt")
        with open(listing, "w", encoding="utf-8") as f:
            f.write("\n".join(files) + "\n")
        parse_cmd = [sys.executable, os.path.join(BENCH_DIR, "libcst_parse.py"), "--jobs", str(jobs),
                     "--files-from", listing]

        l2s_times: list[float] = []
        parse_times: list[float] = []
        l2s_cpu: list[float] = []
        parse_cpu: list[float] = []
        parse_info: dict = {}
        for r in range(reps):
            order = ["loop2scan", "libcst"] if r % 2 == 0 else ["libcst", "loop2scan"]
            for which in order:
                if which == "loop2scan":
                    wall, proc = timed_run(l2s_cmd, ok_codes=(0, 1), env=env)
                    l2s_times.append(wall)
                    l2s_cpu.append(proc.cpu_s)
                else:
                    wall, proc = timed_run(parse_cmd, env=env)
                    parse_times.append(wall)
                    parse_cpu.append(proc.cpu_s)
                    parse_info = json.loads(proc.stdout.strip().splitlines()[-1])
                log(f"[throughput] rep {r + 1}/{reps} {which}: {wall:.2f} s wall, {proc.cpu_s:.2f} s CPU")

        # counts (untimed): the JSON report of the same preview
        _, proc = timed_run(loop2scan_command() + ["rewrite", "--format", "json", "--include-tests", "--jobs",
                                                   str(jobs), *dirs], ok_codes=(0, 1), env=env)
        report = json.loads(proc.stdout)
        _, proc = timed_run([sys.executable, "-c", SLOWEST, *dirs], env=env)
        slowest = [{"file": os.path.relpath(p, os.path.dirname(dirs[0])), "seconds": t}
                   for p, t in json.loads(proc.stdout.strip().splitlines()[-1])]
        log(f"[throughput] slowest file: {slowest[0]['file']} {slowest[0]['seconds']:.2f} s")
        large_result = large_module(large or default_large_module(), reps, env)
    summary = report.get("summary", {})

    l2s = stats(l2s_times)
    parse = stats(parse_times)
    ratio_best = parse["best"] / l2s["best"]
    ratio_median = parse["median"] / l2s["median"]
    result = {
        "benchmark": "throughput",
        "date": now_iso(),
        "quick": quick,
        "machine": machine_info(),
        "tree": {"packages": list(PACKAGES), **size,
                 "loop2scan_files": summary.get("files"), "libcst_parsed": parse_info.get("parsed"),
                 "libcst_failed": parse_info.get("failed")},
        "jobs": jobs,
        "repetitions": reps,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "commands": {
            "loop2scan": f"{loop2scan_command_name()} rewrite --no-diff -q --include-tests --jobs {jobs} "
                         + " ".join(f"<{p}>" for p in PACKAGES),
            "libcst": f"python benchmarks/libcst_parse.py --jobs {jobs} (multiprocessing.Pool({jobs}), "
                      "read + libcst.parse_module per file)",
        },
        "loop2scan_s": l2s,
        "libcst_parse_s": parse,
        "loop2scan_cpu_s": stats(l2s_cpu),
        "libcst_parse_cpu_s": stats(parse_cpu),
        "cpu_ratio_median": statistics.median(parse_cpu) / statistics.median(l2s_cpu),
        "speedup_best": ratio_best,
        "speedup_median": ratio_median,
        "loops": {
            "total": summary.get("loops"),
            "by_status": summary.get("by_status"),
            "by_code": summary.get("by_code"),
            "changed_files": summary.get("changed_files"),
            "errors": summary.get("errors"),
        },
        "slowest_files": slowest,
        "large_module": large_result,
        "target": {"description": f"loop2scan at least {TARGET_RATIO:g}x faster than parsing with libcst "
                                  f"(median wall time, {jobs} processes)",
                   "value": ratio_median, "threshold": TARGET_RATIO, "pass": ratio_median >= TARGET_RATIO},
    }
    write_result("throughput", result)
    log(f"[throughput] loop2scan {l2s['median']:.2f} s, libcst parse {parse['median']:.2f} s, "
        f"ratio {ratio_median:.2f}x")
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run: 1 repetition")
    ap.add_argument("--large-module", metavar="FILE", help="the large module (default: the installed jax's "
                    "jax/_src/numpy/lax_numpy.py)")
    args = ap.parse_args()
    run(args.quick, args.large_module)
