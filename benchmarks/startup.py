"""Startup: a pre-commit-sized run of the command line.

* ``loop2scan rewrite a.py b.py c.py`` (preview, the default diff output) on
  copies of the three looped examples, as a subprocess: best / median of 10;
  beside it the bare interpreter (``python -c pass``) for reference.
* ``python -X importtime -c "import loop2scan.cli"``: the top import costs,
  and a check that no framework module (jax, jaxlib, flax, torch, torch_xla,
  numpy, ...) is imported.
* The same check on the whole rewrite path: the command above run with
  ``PYTHONPROFILEIMPORTTIME=1``, which lists every module the run imports.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from common import (REPO_ROOT, bench_env, log, loop2scan_command, loop2scan_command_name, machine_info, now_iso,
                    part_args, stats, timed_run, write_result)

EXAMPLES = ("examples/jax_rnn.py", "examples/jax_lstm.py", "examples/jax_cumulative.py")
FORBIDDEN = ("jax", "jaxlib", "flax", "torch", "torch_xla", "numpy", "scipy", "tensorflow", "optax", "ml_dtypes")
TARGET_S = 1.0


def parse_importtime(stderr: str) -> list[dict]:
    """Rows of ``-X importtime`` output: module, self and cumulative microseconds, nesting level."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        try:
            self_us, cum_us = int(parts[0]), int(parts[1])
        except ValueError:
            continue  # the header line
        raw = parts[2].rstrip()
        name = raw.lstrip()
        level = (len(raw) - len(name) - 1) // 2
        rows.append({"module": name, "self_us": self_us, "cumulative_us": cum_us, "level": level})
    return rows


def forbidden_in(rows: list[dict]) -> list[str]:
    return sorted({r["module"] for r in rows if r["module"].split(".")[0] in FORBIDDEN})


def by_package(rows: list[dict]) -> list[dict]:
    totals: dict[str, int] = {}
    for r in rows:
        root = r["module"].split(".")[0]
        totals[root] = totals.get(root, 0) + r["self_us"]
    return [{"package": k, "self_ms": v / 1000} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]


def run(quick: bool = False) -> dict:
    reps = 3 if quick else 10
    env = bench_env()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="l2s-bench-") as tmp:
        files = []
        for rel in EXAMPLES:
            dst = os.path.join(tmp, os.path.basename(rel))
            shutil.copyfile(os.path.join(REPO_ROOT, rel), dst)
            files.append(dst)
        cmd = loop2scan_command() + ["rewrite", *files]
        bare = [sys.executable, "-c", "pass"]
        timed_run(cmd, ok_codes=(1,), env=env)  # warm the file cache (and check the exit code)
        timed_run(bare, env=env)
        tool_times, bare_times = [], []
        for r in range(reps):
            for which in (("tool", "bare") if r % 2 == 0 else ("bare", "tool")):
                if which == "tool":
                    tool_times.append(timed_run(cmd, ok_codes=(1,), env=env)[0])
                else:
                    bare_times.append(timed_run(bare, env=env)[0])
        log(f"[startup] rewrite of {len(files)} files: best {min(tool_times):.3f} s")

        # every module imported on the rewrite path (this process and any children)
        _, proc = timed_run(cmd, ok_codes=(1,), env=bench_env(PYTHONPROFILEIMPORTTIME="1"))
        path_rows = parse_importtime(proc.stderr)

    _, proc = timed_run([sys.executable, "-X", "importtime", "-c", "import loop2scan.cli"], env=env)
    rows = parse_importtime(proc.stderr)
    _, proc = timed_run([sys.executable, "-X", "importtime", "-c", "pass"], env=env)
    interpreter = {r["module"] for r in parse_importtime(proc.stderr)}  # imported at startup (site, ...)
    cli_row = next((r for r in rows if r["module"] == "loop2scan.cli"), None)
    top_level = [r for r in rows if r["level"] == 0]
    total_us = sum(r["cumulative_us"] for r in top_level)
    top = sorted(rows, key=lambda r: -r["cumulative_us"])
    # the biggest costs below loop2scan.cli: the direct imports of loop2scan's modules
    third_party = sorted((r for r in rows if not r["module"].startswith("loop2scan")
                          and r["module"].split(".")[0] == r["module"] and r["module"] not in interpreter),
                         key=lambda r: -r["cumulative_us"])

    tool = stats(tool_times)
    bare_s = stats(bare_times)
    bad_cli = forbidden_in(rows)
    bad_path = forbidden_in(path_rows)
    result = {
        "benchmark": "startup",
        "date": now_iso(),
        "quick": quick,
        "machine": machine_info(),
        "command": f"{loop2scan_command_name()} rewrite " + " ".join(os.path.basename(f) for f in EXAMPLES),
        "files": [os.path.basename(f) for f in EXAMPLES],
        "repetitions": reps,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "rewrite_s": tool,
        "bare_python_s": bare_s,
        "rewrite_minus_bare_python_s": tool["median"] - bare_s["median"],
        "import_loop2scan_cli_ms": cli_row["cumulative_us"] / 1000 if cli_row else None,
        "import_total_ms": total_us / 1000,
        "top_imports_cumulative": [{"module": r["module"], "cumulative_ms": r["cumulative_us"] / 1000}
                                   for r in top[:12]],
        "top_third_party_packages": [{"module": r["module"], "cumulative_ms": r["cumulative_us"] / 1000}
                                     for r in third_party[:8]],
        "self_time_by_package": by_package(rows)[:12],
        "rewrite_path_imports_cumulative": [
            {"module": r["module"], "cumulative_ms": r["cumulative_us"] / 1000}
            for r in sorted((r for r in path_rows if r["level"] == 0 and r["module"] not in interpreter),
                            key=lambda r: -r["cumulative_us"])[:6]],
        "rewrite_path_imports_self": [
            {"module": r["module"], "self_ms": r["self_us"] / 1000}
            for r in sorted(path_rows, key=lambda r: -r["self_us"])[:6]],
        "modules_imported_by_cli": len(rows),
        "modules_imported_on_rewrite_path": len(path_rows),
        "forbidden": list(FORBIDDEN),
        "forbidden_imported_by_cli": bad_cli,
        "forbidden_imported_on_rewrite_path": bad_path,
        "targets": [
            {"name": "startup_wall", "description": f"rewrite of 3 small files under {TARGET_S:g} s "
                                                  "(median wall time of the whole command)",
             "value": tool["median"], "threshold": TARGET_S, "pass": tool["median"] < TARGET_S},
            {"name": "no_framework_imports", "description": "no jax/flax/torch/numpy module imported on the "
                                                           "rewrite path",
             "value": bad_cli + [m for m in bad_path if m not in bad_cli], "pass": not bad_cli and not bad_path},
        ],
    }
    write_result("startup", result)
    log(f"[startup] median {tool['median']:.3f} s (bare python {bare_s['median']:.3f} s); "
        f"framework modules imported: {bad_cli + bad_path or 'none'}")
    return result


if __name__ == "__main__":
    run(part_args(__doc__).quick)
