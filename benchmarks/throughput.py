"""Throughput: a whole-tree preview of the installed jax + flax sources.

Times, as subprocesses on N = all cores:

* ``loop2scan rewrite --no-diff -q --jobs N <jax> <flax>`` (preview: exit 1 when
  a rewrite is available), and
* ``benchmarks/libcst_parse.py --jobs N``: reading and parsing the same .py
  files with ``libcst.parse_module`` in a ``multiprocessing.Pool(N)``,

alternating which one goes first in each repetition.  One more, untimed,
``--format json`` run gives the counts of loops by status and code.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile

from common import (BENCH_DIR, bench_env, log, loop2scan_command, loop2scan_command_name, machine_info, now_iso,
                    part_args, stats, timed_run, write_result)

TARGET_RATIO = 3.0
PACKAGES = ("jax", "flax")


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


def run(quick: bool = False) -> dict:
    reps = 1 if quick else 3
    jobs = os.cpu_count() or 1
    dirs = package_dirs()
    files = python_files(dirs)
    size = tree_size(files)
    log(f"[throughput] {size['files']} files, {size['lines']} lines, {jobs} processes, {reps} repetition(s)")

    load_before = os.getloadavg()
    l2s_cmd = loop2scan_command() + ["rewrite", "--no-diff", "-q", "--jobs", str(jobs), *dirs]
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
        _, proc = timed_run(loop2scan_command() + ["rewrite", "--format", "json", "--jobs", str(jobs), *dirs],
                            ok_codes=(0, 1), env=env)
        report = json.loads(proc.stdout)
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
            "loop2scan": f"{loop2scan_command_name()} rewrite --no-diff -q --jobs {jobs} <jax> <flax>",
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
        "target": {"description": f"loop2scan at least {TARGET_RATIO:g}x faster than parsing with libcst "
                                  f"(median wall time, {jobs} processes)",
                   "value": ratio_median, "threshold": TARGET_RATIO, "pass": ratio_median >= TARGET_RATIO},
    }
    write_result("throughput", result)
    log(f"[throughput] loop2scan {l2s['median']:.2f} s, libcst parse {parse['median']:.2f} s, "
        f"ratio {ratio_median:.2f}x")
    return result


if __name__ == "__main__":
    run(part_args(__doc__).quick)
