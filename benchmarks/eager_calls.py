"""Eager calls (no ``jax.jit``) of a function whose loop became a ``lax.scan``.

Outside ``jit``, ``lax.scan`` traces its step and compiles the scan on every
call unless the step is the same function object as before (the tracing cache
keys on it): a step defined inside the function is a new closure on every
call.  Three forms (``eager_calls_worker.FORMS``) of an RNN-like function
(hidden 64, T steps) and of a residual MLP-like stack over a stacked parameter
pytree (L layers): the original Python loop, a scan with a closure step, and a
scan with a module-level step whose broadcast values travel in the carry.

Each (case, size, form) is measured in a fresh process
(``eager_calls_worker.py``): the first call, the steady state of further
calls, and the number of backend compilations of each call.  Repetitions are
the outermost loop; the order of the forms changes between repetitions (each
goes first once in three).
"""

from __future__ import annotations

import os
import sys
import time

from common import (BENCH_DIR, REPO_ROOT, log, min_median, part_args, result_header,
                    run_jax_worker, write_result)

FORMS = ("loop", "closure", "module")
ORDERS = [(0, 1, 2), (2, 1, 0), (1, 2, 0), (0, 2, 1), (2, 0, 1), (1, 0, 2)]
CASES = (
    ("rnn", "T", (8, 64, 256), (8, 64),
     "RNN `h = jnp.tanh(xs[t] @ w + h @ u + b)`, hidden 64, batch 8, inputs 32; the step needs w, u, b"),
    ("mlp", "L", (8, 32), (8,),
     "residual MLP `x = x + alpha * jnp.tanh(x @ params['w'][i] + params['b'][i])` over stacked parameters "
     "{'w': (L, 64, 64), 'b': (L, 64)}, batch 8; the step needs alpha"),
)
FORM_TITLES = {
    "loop": "Python loop",
    "closure": "scan, closure step",
    "module": "scan, module-level step, values in the carry",
}
MIN_CALLS = 10
MIN_TIME = 0.5
MAX_CALLS = 200
WORKER_TIMEOUT_S = 300


def run_worker(case: str, size: int, form: str) -> dict:
    cmd = [sys.executable, os.path.join(BENCH_DIR, "eager_calls_worker.py"), "--case", case, "--size", str(size),
           "--form", form, "--min-calls", str(MIN_CALLS), "--min-time", str(MIN_TIME),
           "--max-calls", str(MAX_CALLS)]
    return run_jax_worker(cmd, REPO_ROOT, WORKER_TIMEOUT_S)


def aggregate(measurements: list[dict], cases: list[tuple[str, list[int]]]) -> list[dict]:
    points = []
    for case, sizes in cases:
        for size in sizes:
            sums = []
            for form in FORMS:
                ms = [m for m in measurements if m["case"] == case and m["size"] == size and m["form"] == form
                      and "error" not in m]
                sums += [m["checksum"] for m in ms]
                points.append({
                    "case": case, "size": size, "form": form,
                    "first_call_s": min_median([m["first_call_s"] for m in ms]),
                    "steady_s": min_median([m["steady_s"] for m in ms]),
                    "first_call_compiles": sorted({m["first_call_compiles"] for m in ms}),
                    "steady_compiles_per_call": min_median([m["steady_compiles_per_call"] for m in ms]),
                    "steady_calls": [m["steady_calls"] for m in ms],
                    "errors": [m["error"] for m in measurements if m["case"] == case and m["size"] == size
                               and m["form"] == form and "error" in m],
                })
            agree = None
            if sums:
                agree = all(abs(s - sums[0]) <= 1e-3 * max(1.0, abs(sums[0])) for s in sums)
            for p in points[-len(FORMS):]:
                p["outputs_agree"] = agree
    return points


def run(quick: bool = False) -> dict:
    reps = 1 if quick else 3
    cases = [(name, list(quick_sizes if quick else sizes)) for name, _, sizes, quick_sizes, _ in CASES]
    load_before = os.getloadavg()
    measurements: list[dict] = []
    t_start = time.perf_counter()
    total = sum(len(s) for _, s in cases) * len(FORMS) * reps
    done = 0
    for rep in range(reps):
        order = [FORMS[i] for i in ORDERS[rep % len(ORDERS)]]
        for case, sizes in cases:
            for size in sizes:
                for form in order:
                    done += 1
                    m = run_worker(case, size, form)
                    m.update({"case": case, "size": size, "form": form, "rep": rep,
                              "load1_after": os.getloadavg()[0]})
                    measurements.append(m)
                    if "error" in m:
                        log(f"[eager] {done}/{total} {case} {size} {form}: ERROR {m['error']}")
                    else:
                        log(f"[eager] {done}/{total} {case} {size} {form}: first call {m['first_call_s'] * 1e3:.1f} ms "
                            f"({m['first_call_compiles']} compiles), then {m['steady_s'] * 1e3:.3f} ms "
                            f"({m['steady_compiles_per_call']:g} compiles per call)")
    result = {
        **result_header("eager_calls", quick, load_before, t_start),
        "method": {
            "process": "one fresh process per (case, size, form, repetition) (benchmarks/eager_calls_worker.py); "
                       "a small unrelated computation (other shapes, eager and jitted) runs first in each process",
            "calls": "the function called eagerly (no jax.jit), every call followed by block_until_ready",
            "first_call": "wall time of the first call in the process (tracing, compilations, run)",
            "steady": f"median of at least {MIN_CALLS} further calls and at least {MIN_TIME:g} s of calls "
                      f"(at most {MAX_CALLS})",
            "compiles": "jax.monitoring.register_event_duration_secs_listener: events whose name contains "
                        "'backend_compile', counted per call",
            "repetitions": reps,
            "form_orders": [[FORMS[i] for i in ORDERS[r % len(ORDERS)]] for r in range(reps)],
            "aggregate": "min and median over repetitions",
            "env": {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false"},
        },
        "cases": [{"name": name, "size_name": size_name, "sizes": dict(cases)[name], "title": title}
                  for name, size_name, _, _, title in CASES],
        "forms": [{"name": f, "title": FORM_TITLES[f]} for f in FORMS],
        "points": aggregate(measurements, cases),
        "measurements": measurements,
    }
    log(f"[eager] results: {os.path.relpath(write_result('eager_calls', result), REPO_ROOT)}")
    return result


if __name__ == "__main__":
    _args = part_args(__doc__)
    run(_args.quick)
