"""One compile-time measurement, in a fresh process.

    python benchmarks/compile_worker.py --workload jax_rnn_grad --variant-file F \
        --inputs-file examples/jax_rnn.py --size 512 [--runs 20] [--warmup 3] [--min-time 0.25]

Imports the variant (and the looped example, for its input helpers) by file
path, builds the inputs, then measures

* ``compile_s``: wall time of ``jax.jit(fn).lower(*args).compile()``
  (tracing + lowering, reported as ``lower_s``, plus XLA compilation,
  ``xla_compile_s``; ``compile_cpu_s`` is the CPU time of all threads of the
  process over the same span, less sensitive to other load on the machine);
* ``stablehlo_lines`` / ``stablehlo_sha256``: the size and a hash of the lowered
  program (equal hashes: the variants compile the same program);
* ``run_s``: the median of ``--runs`` calls of the compiled function, each
  followed by ``block_until_ready``, after ``--warmup`` calls; at least
  ``--runs`` calls, and more for a fast function, so that the timed calls
  last ``--min-time`` seconds in all (at most 5,000 calls): a median of a few
  sub-millisecond calls moves with the state of the machine.

Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402


def import_path(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


MAX_RUNS = 5000


def calls_needed(runs: int, min_time: float, one_call_s: float) -> int:
    """How many calls to time: ``runs``, or more when that would last less than ``min_time``."""
    if one_call_s <= 0:
        return MAX_RUNS
    return max(runs, min(MAX_RUNS, int(min_time / one_call_s) + 1))


def measure_jax(fn, args, runs: int, warmup: int, min_time: float) -> dict:
    import jax
    import numpy as np

    c0 = time.process_time()
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    c2 = time.process_time()
    hlo_text = lowered.as_text()
    hlo_lines = len(hlo_text.splitlines())
    hlo_sha = hashlib.sha256(hlo_text.encode()).hexdigest()[:16]

    out = None
    for _ in range(warmup):
        out = jax.block_until_ready(compiled(*args))
    s = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    runs = calls_needed(runs, min_time, time.perf_counter() - s)
    times = []
    for _ in range(runs):
        s = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - s)

    leaves = jax.tree_util.tree_leaves(out)
    checksum = float(sum(np.sum(np.abs(np.asarray(x, dtype=np.float64))) for x in leaves))
    return {
        "compile_s": t2 - t0,
        "lower_s": t1 - t0,
        "xla_compile_s": t2 - t1,
        "compile_cpu_s": c2 - c0,
        "run_s": statistics.median(times),
        "run_min_s": min(times),
        "runs": runs,
        "warmup": warmup,
        "stablehlo_lines": hlo_lines,
        "stablehlo_sha256": hlo_sha,
        "checksum": checksum,
    }


# How a workload's function is compiled and timed, by Workload.runner.
RUNNERS = {"jax": measure_jax}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--variant-file", required=True)
    ap.add_argument("--inputs-file", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.25)
    args = ap.parse_args()

    t_start = time.perf_counter()
    wl = workloads.get(args.workload)
    variant = import_path(args.variant_file, "l2s_bench_variant")
    same = os.path.abspath(args.inputs_file) == os.path.abspath(args.variant_file)
    inputs = variant if same else import_path(args.inputs_file, "l2s_bench_inputs")
    t_import = time.perf_counter()
    builder = getattr(workloads, wl.builder)
    fn, fargs = builder(variant, inputs, args.size, **wl.fixed)
    if wl.runner == "jax":
        import jax

        jax.block_until_ready(fargs)
    t_inputs = time.perf_counter()
    result = RUNNERS[wl.runner](fn, fargs, args.runs, args.warmup, args.min_time)
    result.update({"import_s": t_import - t_start, "inputs_s": t_inputs - t_import,
                   "worker_s": time.perf_counter() - t_start})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
