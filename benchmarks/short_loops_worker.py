"""One short-loop measurement, in a fresh process.

    python benchmarks/short_loops_worker.py --body elementwise --n 4 --form scan \
        [--runs 20] [--warmup 3] [--min-time 0.2]

The bodies are written twice, as a Python ``for`` loop over a static trip
count ``n`` (unrolled by tracing) and as the equivalent ``jax.lax.scan``.  The
worker

1. builds the body's inputs (fixed seeds) and compiles a small unrelated
   function (a scan, a matmul, ``tanh``, on other shapes) so that the one-off
   costs of the first compilation of a process (backend start, lazy imports of
   the lowering rules) are not charged to the measured form;
2. measures ``compile_s``: the wall time of ``jax.jit(f).lower(*args).compile()``
   of the form given by ``--form`` (``lower_s`` + ``xla_compile_s``;
   ``compile_cpu_s`` is the CPU time of all threads of the process over the
   same span), the first compilation of that body in the process;
3. compiles the other form as well (not timed as a cold compile) and times
   both compiled functions *interleaved* (loop, scan, scan, loop, ...), each
   call followed by ``block_until_ready``, after ``--warmup`` calls each: at
   least ``--runs`` calls per form and at least ``--min-time`` seconds of calls
   per form (at most 5,000).  The run times of the two forms therefore come
   from the same process under the same conditions (``run_pair``); ``run_s``
   is the median of the measured form.

Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

FORMS = ("loop", "scan")
MAX_RUNS = 5000

# --------------------------------------------------------------------------- bodies
# Each body: inputs(n) -> args (a tuple of arrays) and make(form, n) -> function of args.
# The loop form is what a person writes with a static trip count; the scan form is the
# same computation step for step, written as a careful person writes a scan.

ELEM_SIZE = 64
RNN_BATCH, RNN_IN, RNN_HIDDEN = 4, 32, 32
CLENSHAW_SIZE = 64
NEWTON_SIZE = 16

# constant table of the Clenshaw recurrence (Chebyshev series coefficients, decaying)
COEFFS = np.array([(-1.0) ** k / (k + 1.0) ** 2 for k in range(65)], dtype=np.float32)


def _normal(seed: int, shape, scale: float = 1.0):
    """Inputs from NumPy's generator (fixed seeds): no compilation before the measured one."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _uniform(seed: int, shape, low: float, high: float):
    return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


# (a) elementwise recurrence h = tanh(h * a + b) on a vector of 64

def elementwise_inputs(n):
    h = _normal(0, (ELEM_SIZE,))
    a = _uniform(1, (ELEM_SIZE,), 0.0, 0.9)
    b = _normal(2, (ELEM_SIZE,), 0.1)
    return (h, a, b)


def elementwise_loop(n):
    def f(h, a, b):
        for _ in range(n):
            h = jnp.tanh(h * a + b)
        return h
    return f


def elementwise_scan(n):
    def f(h, a, b):
        def step(h, _):
            return jnp.tanh(h * a + b), None
        h, _ = lax.scan(step, h, None, length=n)
        return h
    return f


# (b) small RNN cell, hidden 32, batch 4, inputs xs[t]

def rnn_inputs(n):
    w = _normal(0, (RNN_IN, RNN_HIDDEN), 1 / np.sqrt(RNN_IN))
    u = _normal(1, (RNN_HIDDEN, RNN_HIDDEN), 1 / np.sqrt(RNN_HIDDEN))
    c = _normal(2, (RNN_HIDDEN,), 0.1)
    xs = _normal(3, (n, RNN_BATCH, RNN_IN))
    h0 = _normal(4, (RNN_BATCH, RNN_HIDDEN), 0.1)
    return ((w, u, c), xs, h0)


def rnn_loop(n):
    def f(params, xs, h):
        w, u, c = params
        for t in range(xs.shape[0]):
            h = jnp.tanh(xs[t] @ w + h @ u + c)
        return h
    return f


def rnn_scan(n):
    def f(params, xs, h):
        w, u, c = params

        def step(h, x):
            return jnp.tanh(x @ w + h @ u + c), None
        h, _ = lax.scan(step, h, xs)
        return h
    return f


# (c) Clenshaw recurrence b_k = c_k + 2 x b_{k+1} - b_{k+2}, scalar c_k from a constant table

def clenshaw_inputs(n):
    return (_uniform(0, (CLENSHAW_SIZE,), -1.0, 1.0),)


def clenshaw_loop(n):
    def f(x):
        b1 = jnp.zeros_like(x)
        b2 = jnp.zeros_like(x)
        for k in range(n, 0, -1):
            b1, b2 = COEFFS[k] + 2.0 * x * b1 - b2, b1
        return COEFFS[0] + x * b1 - b2
    return f


def clenshaw_scan(n):
    table = COEFFS[n:0:-1].copy()  # c_n ... c_1, the order the recurrence uses them

    def f(x):
        def step(carry, ck):
            b1, b2 = carry
            return (ck + 2.0 * x * b1 - b2, b1), None
        zero = jnp.zeros_like(x)
        (b1, b2), _ = lax.scan(step, (zero, zero), jnp.asarray(table))
        return COEFFS[0] + x * b1 - b2
    return f


# (d) Newton-Schulz re-orthogonalisation X <- 1.5 X - 0.5 (X X^T) X on a (16, 16) matrix

def newton_inputs(n):
    x = np.random.default_rng(0).standard_normal((NEWTON_SIZE, NEWTON_SIZE))
    return (jnp.asarray(x / np.linalg.norm(x), jnp.float32),)  # spectral norm <= 1: the iteration converges


def newton_loop(n):
    def f(x):
        for _ in range(n):
            x = 1.5 * x - 0.5 * (x @ x.T) @ x
        return x
    return f


def newton_scan(n):
    def f(x):
        def step(x, _):
            return 1.5 * x - 0.5 * (x @ x.T) @ x, None
        x, _ = lax.scan(step, x, None, length=n)
        return x
    return f


# gradients (of the sum of the output) of (a) with respect to (a, b) and of (b) with respect to params

def _grad_of(make, argnums):
    def build(n):
        f = make(n)
        return jax.grad(lambda *args: jnp.sum(f(*args)), argnums=argnums)
    return build


BODIES = {
    "elementwise": (elementwise_inputs, {"loop": elementwise_loop, "scan": elementwise_scan}),
    "rnn": (rnn_inputs, {"loop": rnn_loop, "scan": rnn_scan}),
    "clenshaw": (clenshaw_inputs, {"loop": clenshaw_loop, "scan": clenshaw_scan}),
    "newton": (newton_inputs, {"loop": newton_loop, "scan": newton_scan}),
    "elementwise_grad": (elementwise_inputs, {"loop": _grad_of(elementwise_loop, (1, 2)),
                                              "scan": _grad_of(elementwise_scan, (1, 2))}),
    "rnn_grad": (rnn_inputs, {"loop": _grad_of(rnn_loop, 0), "scan": _grad_of(rnn_scan, 0)}),
}


# --------------------------------------------------------------------------- measurement

def warm_process() -> float:
    """Compile and run an unrelated small function (other shapes) once; returns its compile time."""
    def g(x, m):
        def step(c, r):
            return jnp.tanh(c @ m + r), None
        c, _ = lax.scan(step, x[0], x)
        return jnp.sum(c * 1.5 - 0.5)
    x = jnp.ones((3, 5), jnp.float32)
    m = jnp.eye(5, dtype=jnp.float32)
    t0 = time.perf_counter()
    compiled = jax.jit(g).lower(x, m).compile()
    dt = time.perf_counter() - t0
    jax.block_until_ready(compiled(x, m))
    return dt


def checksum(out) -> float:
    return float(sum(np.sum(np.abs(np.asarray(x, dtype=np.float64))) for x in jax.tree_util.tree_leaves(out)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--body", required=True, choices=sorted(BODIES))
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--form", required=True, choices=FORMS)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2)
    args = ap.parse_args()

    make_inputs, forms = BODIES[args.body]
    fargs = jax.block_until_ready(make_inputs(args.n))
    warm_s = warm_process()

    other = "scan" if args.form == "loop" else "loop"
    fn = forms[args.form](args.n)
    c0 = time.process_time()
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*fargs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    c2 = time.process_time()
    hlo_text = compiled.as_text() or ""

    t3 = time.perf_counter()
    other_compiled = jax.jit(forms[other](args.n)).lower(*fargs).compile()
    other_compile_s = time.perf_counter() - t3
    fns = {args.form: compiled, other: other_compiled}

    outs = {}
    for form in FORMS:
        for _ in range(args.warmup):
            outs[form] = jax.block_until_ready(fns[form](*fargs))
    s = time.perf_counter()
    for form in FORMS:
        jax.block_until_ready(fns[form](*fargs))
    one_call = (time.perf_counter() - s) / 2
    runs = max(args.runs, min(MAX_RUNS, int(args.min_time / max(one_call, 1e-9)) + 1))
    times: dict[str, list[float]] = {f: [] for f in FORMS}
    pattern = (FORMS, FORMS[::-1])
    for i in range(runs):
        for form in pattern[i % 2]:
            s = time.perf_counter()
            jax.block_until_ready(fns[form](*fargs))
            times[form].append(time.perf_counter() - s)
    run_pair = {f: statistics.median(times[f]) for f in FORMS}
    run_pair_min = {f: min(times[f]) for f in FORMS}

    sums = {f: checksum(outs[f]) for f in FORMS}
    ref = sums["loop"]
    print(json.dumps({
        "compile_s": t2 - t0,
        "lower_s": t1 - t0,
        "xla_compile_s": t2 - t1,
        "compile_cpu_s": c2 - c0,
        "compiled_while_loops": hlo_text.count(" while("),
        "compiled_hlo_lines": len(hlo_text.splitlines()),
        "other_form_compile_warm_s": other_compile_s,
        "warm_process_compile_s": warm_s,
        "run_s": run_pair[args.form],
        "run_pair": run_pair,
        "run_pair_min": run_pair_min,
        "scan_over_loop_run": run_pair["scan"] / run_pair["loop"],
        "runs": runs,
        "checksums": sums,
        "outputs_agree": all(abs(v - ref) <= 1e-3 * max(1.0, abs(ref)) for v in sums.values()),
    }))


if __name__ == "__main__":
    main()
