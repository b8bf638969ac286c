"""One eager-call measurement, in a fresh process.

    python benchmarks/eager_calls_worker.py --case rnn --size 64 --form closure \
        [--min-calls 10] [--min-time 0.5] [--max-calls 200]

Three forms of the same function, called eagerly (no ``jax.jit`` around them):

* ``loop``     the original Python ``for`` loop;
* ``closure``  ``lax.scan`` with the step defined inside the function (a new
               function object on every call, closing over the values it needs);
* ``module``   ``lax.scan`` with the step defined once at module level, the
               values it needs passed in through the carry and returned unchanged.

Counts the backend compilations (``jax.monitoring`` duration events whose name
contains ``backend_compile``) and times, each with ``block_until_ready``: the
first call, then at least ``--min-calls`` further calls and at least
``--min-time`` seconds of them (at most ``--max-calls``).  Before the first
call, a small unrelated computation (other shapes) runs once, eagerly and under
``jit``, so that the backend start and the first use of the lowering machinery
are not charged to the first call.  Prints one JSON line on stdout.
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

FORMS = ("loop", "closure", "module")
RNN_BATCH, RNN_IN, RNN_HIDDEN = 8, 32, 64
MLP_BATCH, MLP_WIDTH = 8, 64


def _normal(seed: int, shape, scale: float = 1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# --------------------------------------------------------------------------- RNN: h = tanh(x_t W + h U + b)

def rnn_inputs(steps: int):
    params = (_normal(0, (RNN_IN, RNN_HIDDEN), 1 / np.sqrt(RNN_IN)),
              _normal(1, (RNN_HIDDEN, RNN_HIDDEN), 1 / np.sqrt(RNN_HIDDEN)),
              _normal(2, (RNN_HIDDEN,), 0.1))
    xs = _normal(3, (steps, RNN_BATCH, RNN_IN))
    h0 = _normal(4, (RNN_BATCH, RNN_HIDDEN), 0.1)
    return (params, xs, h0)


def rnn_loop(params, xs, h):
    w, u, b = params
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ w + h @ u + b)
    return h


def rnn_closure(params, xs, h):
    w, u, b = params

    def step(h, x):
        return jnp.tanh(x @ w + h @ u + b), None
    h, _ = lax.scan(step, h, xs)
    return h


def _rnn_step(carry, x):
    h, w, u, b = carry
    return (jnp.tanh(x @ w + h @ u + b), w, u, b), None


def rnn_module(params, xs, h):
    w, u, b = params
    (h, _, _, _), _ = lax.scan(_rnn_step, (h, w, u, b), xs)
    return h


# --------------------------------------------------------------------------- MLP: residual stack over stacked params

def mlp_inputs(layers: int):
    params = {"w": _normal(0, (layers, MLP_WIDTH, MLP_WIDTH), 1 / np.sqrt(MLP_WIDTH)),
              "b": _normal(1, (layers, MLP_WIDTH), 0.1)}
    x = _normal(2, (MLP_BATCH, MLP_WIDTH))
    alpha = jnp.asarray(0.5, jnp.float32)
    return (params, x, alpha)


def mlp_loop(params, x, alpha):
    for i in range(params["w"].shape[0]):
        x = x + alpha * jnp.tanh(x @ params["w"][i] + params["b"][i])
    return x


def mlp_closure(params, x, alpha):
    def step(x, layer):
        return x + alpha * jnp.tanh(x @ layer["w"] + layer["b"]), None
    x, _ = lax.scan(step, x, params)
    return x


def _mlp_step(carry, layer):
    x, alpha = carry
    return (x + alpha * jnp.tanh(x @ layer["w"] + layer["b"]), alpha), None


def mlp_module(params, x, alpha):
    (x, _), _ = lax.scan(_mlp_step, (x, alpha), params)
    return x


CASES = {
    "rnn": (rnn_inputs, {"loop": rnn_loop, "closure": rnn_closure, "module": rnn_module}),
    "mlp": (mlp_inputs, {"loop": mlp_loop, "closure": mlp_closure, "module": mlp_module}),
}

# --------------------------------------------------------------------------- measurement

_compiles = [0]


def _listener(name: str, secs: float, **kwargs) -> None:
    if "backend_compile" in name:
        _compiles[0] += 1


def warm_process() -> int:
    """Run a small unrelated computation (other shapes), eagerly and jitted; returns its compile count."""
    before = _compiles[0]
    x = jnp.ones((3, 5), jnp.float32)
    m = jnp.eye(5, dtype=jnp.float32)
    jax.block_until_ready(jnp.tanh(x @ m + 1.0))

    def g(x, m):
        c, _ = lax.scan(lambda c, r: (jnp.tanh(c @ m + r), None), x[0], x)
        return c
    jax.block_until_ready(jax.jit(g)(x, m))
    return _compiles[0] - before


def timed_call(fn, args) -> tuple[float, int, object]:
    before = _compiles[0]
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, _compiles[0] - before, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--form", required=True, choices=FORMS)
    ap.add_argument("--min-calls", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--max-calls", type=int, default=200)
    args = ap.parse_args()

    jax.monitoring.register_event_duration_secs_listener(_listener)
    make_inputs, forms = CASES[args.case]
    fargs = jax.block_until_ready(make_inputs(args.size))
    warm_compiles = warm_process()
    fn = forms[args.form]

    first_s, first_compiles, out = timed_call(fn, fargs)
    times, compiles = [], []
    t_end = time.perf_counter() + args.min_time
    while len(times) < args.max_calls and (len(times) < args.min_calls or time.perf_counter() < t_end):
        dt, nc, out = timed_call(fn, fargs)
        times.append(dt)
        compiles.append(nc)
    leaves = jax.tree_util.tree_leaves(out)
    print(json.dumps({
        "first_call_s": first_s,
        "first_call_compiles": first_compiles,
        "steady_s": statistics.median(times),
        "steady_min_s": min(times),
        "steady_calls": len(times),
        "steady_compiles_per_call": sum(compiles) / len(compiles),
        "steady_compiles_max": max(compiles),
        "warm_process_compiles": warm_compiles,
        "checksum": float(sum(np.sum(np.abs(np.asarray(x, dtype=np.float64))) for x in leaves)),
    }))


if __name__ == "__main__":
    main()
