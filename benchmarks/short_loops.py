"""Short static loops: from which trip count does a scan pay?  Loop vs ``lax.scan`` by trip count.

For each small body (``short_loops_worker.BODIES``: an elementwise recurrence,
a small RNN cell, a Clenshaw recurrence over a constant table, a Newton-Schulz
re-orthogonalisation step, and the gradients of the first two) and each trip
count, the Python loop and the equivalent ``jax.lax.scan`` are measured, each
in a fresh process (``short_loops_worker.py``): the cold compile time of the
process's form, then the run times of both forms, interleaved in the same
process.  Repetitions are the outermost loop; the form compiled first changes
from one repetition to the next.

From the results: per body, the smallest trip count from which the scan runs
no slower than the loop and compiles as fast or faster at every larger trip
count measured, and the default ``min-trip-count`` that follows for all bodies.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from common import (BENCH_DIR, REPO_ROOT, log, min_median, part_args, result_header,
                    run_jax_worker, write_result)

FORMS = ("loop", "scan")
BODIES = (
    ("elementwise", "elementwise recurrence `h = jnp.tanh(h * a + b)`, h of 64"),
    ("rnn", "RNN cell `h = jnp.tanh(xs[t] @ w + h @ u + c)`, hidden 32, batch 4, inputs 32"),
    ("clenshaw", "Clenshaw recurrence `b1, b2 = c[k] + 2 * x * b1 - b2, b1`, scalar `c[k]` from a constant "
                 "table, x of 64"),
    ("newton", "Newton-Schulz re-orthogonalisation `x = 1.5 * x - 0.5 * (x @ x.T) @ x`, x of (16, 16)"),
    ("elementwise_grad", "`jax.grad` of the sum of the elementwise recurrence, with respect to (a, b)"),
    ("rnn_grad", "`jax.grad` of the sum of the RNN's final state, with respect to its parameters"),
)
TRIP_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
QUICK_TRIP_COUNTS = (1, 2, 4, 8, 16)
CONTEXT_ONLY = (32, 64)        # measured for context; a threshold is chosen among the others
RUNS = 20
WARMUP = 3
MIN_TIME = 0.15                # seconds of timed calls per form and process
QUICK_MIN_TIME = 0.05
RUN_TOL = 0.05                 # "not slower to run": scan / loop <= 1.05 (noise of a few-microsecond call)
COMPILE_TOL = 0.05             # "compiles as fast": scan / loop <= 1.05
PAYS_MARGIN = 0.2              # "pays": a win of at least 20% on run or compile time (and run time no worse)
WORKER_TIMEOUT_S = 300


def run_worker(body: str, n: int, form: str, min_time: float = MIN_TIME) -> dict:
    cmd = [sys.executable, os.path.join(BENCH_DIR, "short_loops_worker.py"), "--body", body, "--n", str(n),
           "--form", form, "--runs", str(RUNS), "--warmup", str(WARMUP), "--min-time", str(min_time)]
    return run_jax_worker(cmd, REPO_ROOT, WORKER_TIMEOUT_S)


def _ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def aggregate(measurements: list[dict], bodies: list[str], ns: list[int]) -> list[dict]:
    points = []
    for body in bodies:
        for n in ns:
            ms = [m for m in measurements if m["body"] == body and m["n"] == n and "error" not in m]
            errs = [f"{m['form']}: {m['error']}" for m in measurements
                    if m["body"] == body and m["n"] == n and "error" in m]
            row: dict = {"body": body, "n": n, "errors": errs}
            for form in FORMS:
                own = [m for m in ms if m["form"] == form]
                row[form] = {
                    # cold compile: only the process that compiled this form first
                    "compile_s": min_median([m["compile_s"] for m in own]),
                    "compile_cpu_s": min_median([m["compile_cpu_s"] for m in own]),
                    "lower_s": min_median([m["lower_s"] for m in own]),
                    # run: every process timed both forms (per-process medians)
                    "run_s": min_median([m["run_pair"][form] for m in ms]),
                    "compiled_while_loops": sorted({m["compiled_while_loops"] for m in own}),
                }

            def paired_compile(key):
                rs = []
                for rep in sorted({m["rep"] for m in ms}):
                    a = [m[key] for m in ms if m["rep"] == rep and m["form"] == "scan"]
                    b = [m[key] for m in ms if m["rep"] == rep and m["form"] == "loop"]
                    if a and b and b[0] > 0:
                        rs.append(a[0] / b[0])
                return statistics.median(rs) if rs else None

            run_ratios = [m["scan_over_loop_run"] for m in ms]
            row.update({
                "scan_over_loop_compile": _ratio(row["scan"]["compile_s"], row["loop"]["compile_s"]),
                "scan_over_loop_compile_cpu": _ratio(row["scan"]["compile_cpu_s"], row["loop"]["compile_cpu_s"]),
                "scan_over_loop_compile_cpu_paired": paired_compile("compile_cpu_s"),
                "scan_over_loop_compile_paired": paired_compile("compile_s"),
                "scan_over_loop_run": statistics.median(run_ratios) if run_ratios else None,
                "scan_over_loop_run_all": run_ratios,
                "outputs_agree": all(m["outputs_agree"] for m in ms) if ms else None,
            })
            points.append(row)
    return points


def _meets(p: dict, run_tol: float, compile_tol: float, what: str = "both") -> bool | None:
    run, comp = p["scan_over_loop_run"], p["scan_over_loop_compile_cpu_paired"]
    if run is None or comp is None:
        return None
    ok_run = run <= 1.0 + run_tol
    ok_comp = comp <= 1.0 + compile_tol
    return {"both": ok_run and ok_comp, "run": ok_run, "compile": ok_comp}[what]


def smallest_from(points: list[dict], body: str, ns: list[int], what: str, run_tol: float,
                  compile_tol: float) -> int | None:
    """Smallest trip count n such that the criterion holds at n and at every larger trip count measured."""
    rows = sorted((p for p in points if p["body"] == body), key=lambda p: p["n"])
    best = None
    for p in reversed(rows):
        if _meets(p, run_tol, compile_tol, what):
            best = p["n"]
        else:
            break
    return best


def analyse(points: list[dict], bodies: list[str], ns: list[int]) -> dict:
    per_body = {}
    for body in bodies:
        per_body[body] = {
            what: smallest_from(points, body, ns, what, RUN_TOL, COMPILE_TOL) for what in ("both", "run", "compile")}
        per_body[body]["both_strict"] = smallest_from(points, body, ns, "both", 0.0, 0.0)
    out = {
        "criterion": (f"scan / loop run time (median over processes of the ratio measured in one process) "
                      f"<= {1 + RUN_TOL:g} and scan / loop compile CPU time (median over repetitions of the "
                      f"ratio of the two fresh processes of one repetition) <= {1 + COMPILE_TOL:g}, at this trip "
                      "count and at every larger one measured"),
        "run_tolerance": RUN_TOL,
        "compile_tolerance": COMPILE_TOL,
        "per_body": per_body,
    }
    for what in ("both", "run", "compile", "both_strict"):
        vals = [per_body[b][what] for b in bodies]
        out[f"all_bodies_{what}"] = None if any(v is None for v in vals) else max(vals)
    out["recommendation"] = recommend(points, bodies, [n for n in ns if n not in CONTEXT_ONLY])
    return out


def pays(p: dict) -> bool:
    """The scan pays at this point: it runs no slower (5% allowed) and wins at
    least 20% on run time or on compile CPU time."""
    run, comp = p["scan_over_loop_run"], p["scan_over_loop_compile_cpu_paired"]
    if run is None or comp is None:
        return False
    return run <= 1.0 + RUN_TOL and (run <= 1.0 - PAYS_MARGIN or comp <= 1.0 - PAYS_MARGIN)


def recommend(points: list[dict], bodies: list[str], ns: list[int]) -> dict | None:
    """The default ``min-trip-count``: the smallest trip count from which the scan
    pays (:func:`pays`) for at least half of the bodies, at that trip count and
    at every larger one measured."""
    paying = {n: sorted(p["body"] for p in points if p["n"] == n and p["body"] in bodies and pays(p)) for n in ns}
    value = None
    for n in sorted(ns, reverse=True):
        if 2 * len(paying[n]) >= len(bodies):
            value = n
        else:
            break
    if value is None:
        return None
    below = [n for n in ns if n < value]
    reason = (f"From n = {value} on, the scan runs no slower and wins at least {PAYS_MARGIN:.0%} on run or compile "
              f"time for at least half of the bodies ({', '.join(paying[value])} at n = {value}); below it, for "
              + (", ".join(f"n = {n}: {', '.join(paying[n]) or 'none'}" for n in below) or "no trip count")
              + ". Static trip counts below it stay loops (L2S701).")
    return {"value": value, "reason": reason, "paying": paying, "margin": PAYS_MARGIN}


def run(quick: bool = False) -> dict:
    reps = 1 if quick else 3
    ns = list(QUICK_TRIP_COUNTS if quick else TRIP_COUNTS)
    min_time = QUICK_MIN_TIME if quick else MIN_TIME
    bodies = [b for b, _ in BODIES]
    load_before = os.getloadavg()
    measurements: list[dict] = []
    t_start = time.perf_counter()
    total = len(bodies) * len(ns) * len(FORMS) * reps
    done = 0
    for rep in range(reps):
        order = FORMS if rep % 2 == 0 else FORMS[::-1]
        for body in bodies:
            for n in ns:
                for form in order:
                    done += 1
                    m = run_worker(body, n, form, min_time)
                    m.update({"body": body, "n": n, "form": form, "rep": rep, "load1_after": os.getloadavg()[0]})
                    measurements.append(m)
                    if "error" in m:
                        log(f"[short] {done}/{total} {body} n={n} {form}: ERROR {m['error']}")
                    else:
                        log(f"[short] {done}/{total} {body} n={n} {form}: compile {m['compile_s'] * 1e3:.1f} ms, "
                            f"run loop {m['run_pair']['loop'] * 1e6:.1f} us / scan {m['run_pair']['scan'] * 1e6:.1f} us")
    points = aggregate(measurements, bodies, ns)
    result = {
        **result_header("short_loops", quick, load_before, t_start),
        "method": {
            "process": "one fresh process per (body, trip count, form, repetition) "
                       "(benchmarks/short_loops_worker.py); a small unrelated function (a scan, a matmul, tanh, "
                       "other shapes) is compiled first in each process, so the one-off costs of a process's "
                       "first compilation are not charged to the measured form",
            "compile": "wall time of jax.jit(f).lower(*args).compile() of the process's form, the first "
                       "compilation of that body in the process; compile_cpu_s: CPU time of all threads over the "
                       "same span",
            "run": f"both forms compiled in each process and timed interleaved (loop, scan, scan, loop, ...), at "
                   f"least {RUNS} calls and {min_time:g} s of calls per form (at most 5,000), after {WARMUP} "
                   "warm-up calls each, every call followed by block_until_ready; median per form and process",
            "repetitions": reps,
            "form_orders": [list(FORMS if r % 2 == 0 else FORMS[::-1]) for r in range(reps)],
            "aggregate": "compile: min and median over repetitions; run: min and median over all processes of "
                         "the per-process median; run ratio: median over processes of scan / loop measured in "
                         "the same process; compile ratio (criterion): median over repetitions of scan / loop "
                         "compile CPU time of the two processes of a repetition",
            "env": {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false"},
        },
        "bodies": [{"name": b, "title": t} for b, t in BODIES],
        "trip_counts": ns,
        "context_only": [n for n in CONTEXT_ONLY if n in ns],
        "points": points,
        "analysis": analyse(points, bodies, ns),
        "measurements": measurements,
    }
    log(f"[short] results: {os.path.relpath(write_result('short_loops', result), REPO_ROOT)}")
    return result


if __name__ == "__main__":
    _args = part_args(__doc__)
    run(_args.quick)
