"""The Flax NNX part of ``--check`` (imported only by the worker process): loops
over stacks of NNX modules, whose rewrite changes how the model is built.

The example's factory takes the module (``def make(module): ...``) and returns
``{"self": module.Decoder(..., rngs=nnx.Rngs(0)), "args": ..., "kwargs": ...}``;
it is called once with the original module and once with the rewritten one.
The original model's whole state (weights, RNG keys and counts, batch
statistics) is put into the rewritten model in its layout: every ``nnx.List``
of layers that became one stacked module is stacked with
:func:`loop2scan.layout.stack_nnx_state`.  Then the method is called on both:
outputs, the model state after the call, gradients with respect to the
floating-point inputs and every ``nnx.Param`` (in the stacked layout), and
compile and run time under ``nnx.jit``, before and after.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from loop2scan.layout import LayoutError, stack_nnx_state


def _is_layer_list(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and all(isinstance(k, int) and not isinstance(k, bool)
                                                         for k in node)


def stacked_like(original: Any, target: Any, path: tuple = ()) -> Any:
    """``original`` (a pure-dict state) with every layer list that ``target``
    holds stacked (an ``nnx.List`` in one, a stacked module in the other) stacked."""
    if _is_layer_list(original) and isinstance(target, dict) and not _is_layer_list(target):
        return stack_nnx_state({"l": original}, "l")["l"]
    if isinstance(original, dict) and isinstance(target, dict):
        return {k: stacked_like(v, target.get(k), path + (k,)) if k in target else v for k, v in original.items()}
    return original


def numeric(tree: Any) -> Any:
    """RNG keys as their raw data, so that they compare as arrays."""
    def leaf(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x
    return jax.tree.map(leaf, tree)


def pure_state(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model))


def copy_into(original: nnx.Module, rewritten: nnx.Module) -> None:
    state = nnx.state(rewritten)
    nnx.replace_by_pure_dict(state, stacked_like(pure_state(original), pure_state(rewritten)))
    nnx.update(rewritten, state)


def run_module_example(job: dict, spec: dict, backend, original, rewritten, factory, result: dict) -> dict:
    """The check of one example whose loops scan stacks of NNX modules."""
    from .worker import _first_line, call_factory, diagnose

    target = job["target"]
    method = target.rsplit(".", 1)[-1] if "." in target else "__call__"
    try:
        args, kwargs, model_before = call_factory(factory, original)
        args_b, kwargs_b, model_after = call_factory(factory, rewritten)
    except Exception as e:  # noqa: BLE001 - reported as the reason
        return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} raised "
                    f"{type(e).__name__}: {_first_line(e)}")
    if not isinstance(model_before, nnx.Module) or not isinstance(model_after, nnx.Module):
        return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} must take "
                    "`module` and return {\"self\": module.<Model>(...), \"args\": ...}: the rewritten model is "
                    "built from the rewritten module's classes")
    try:
        copy_into(model_before, model_after)
    except (LayoutError, ValueError, KeyError) as e:
        return dict(result, verdict="unverified", reason=f"the original model's state does not fit the rewritten "
                    f"model: {_first_line(e)}")
    tol = backend.tolerances(job.get("rtol") or spec.get("rtol"), job.get("atol") or spec.get("atol"))
    differences: list[str] = []

    def call(model, a, k):
        return getattr(model, method)(*a, **k)

    try:
        out_before = jax.block_until_ready(call(model_before, args, kwargs))
    except Exception as e:  # noqa: BLE001
        return dict(result, verdict="unverified", reason=f"the original `{target}` raised {type(e).__name__}: "
                    f"{_first_line(e)}")
    try:
        out_after = jax.block_until_ready(call(model_after, args, kwargs))
    except Exception as e:  # noqa: BLE001
        return dict(result, verdict="differs", reason="the rewritten code fails where the original runs",
                    differences=[diagnose(e, job)])
    result["outputs"] = backend.compare(out_before, out_after, tol, "output", differences)
    backend.compare(numeric(stacked_like(pure_state(model_before), pure_state(model_after))),
                    numeric(pure_state(model_after)), tol, "model state after the call", differences)
    # gradients with respect to every nnx.Param and the floating-point inputs, one random cotangent
    try:
        result["gradients"] = _gradients(backend, model_before, model_after, call, args, kwargs, out_before, tol,
                                         differences)
    except Exception as e:  # noqa: BLE001
        result["gradients_note"] = f"gradients not compared ({type(e).__name__}: {_first_line(e)})"
    result["compile_s"], result["run_s"] = _timings(model_before, model_after, call, args, kwargs)
    if differences:
        return dict(result, verdict="differs", differences=differences)
    return dict(result, verdict="verified")


def _float(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)


def _gradients(backend, model_before, model_after, call, args, kwargs, out, tol, differences) -> dict:
    """Gradients of one random projection of the outputs (``out`` gives their
    shapes), with respect to every ``nnx.Param`` and floating-point input.  Both
    models are in the same state (RNG counts included), so dropout draws the
    same masks."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    float_idx = [i for i, x in enumerate(leaves) if _float(x)]

    def loss(model, floats, cot):
        full = list(leaves)
        for i, v in zip(float_idx, floats):
            full[i] = v
        a, k = jax.tree.unflatten(treedef, full)
        out = [o for o in jax.tree.leaves(call(model, a, k)) if _float(o)]
        return sum(jnp.vdot(o, c) for o, c in zip(out, cot))

    floats = [leaves[i] for i in float_idx]
    probe = [o for o in jax.tree.leaves(out) if _float(o)]
    keys = jax.random.split(backend.key, max(len(probe), 1))
    cot = [jax.random.normal(k, o.shape, o.dtype) for k, o in zip(keys, probe)]
    grad = nnx.grad(loss, argnums=(0, 1))
    g_model_b, g_in_b = grad(model_before, floats, cot)
    g_model_a, g_in_a = grad(model_after, floats, cot)
    stats = backend.compare(g_in_b, g_in_a, tol.gradients(), "input gradient", differences)
    before = nnx.to_pure_dict(g_model_b)
    after = nnx.to_pure_dict(g_model_a)
    stats_p = backend.compare(stacked_like(before, after), after, tol.gradients(), "parameter gradient",
                              differences)
    return {"max_abs": max(stats["max_abs"], stats_p["max_abs"]),
            "max_rel": max(stats["max_rel"], stats_p["max_rel"]),
            "parameters": len(jax.tree.leaves(after)), "inputs": len(floats)}


def _timings(model_before, model_after, call, args, kwargs):
    """Compile and steady-state run time of the method under ``jax.jit`` (the
    model's state and the array inputs traced, the other inputs fixed)."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    arrays = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array)]
    compile_s = {"before": None, "after": None}
    run_s = {"before": None, "after": None}
    for label, model in (("before", model_before), ("after", model_after)):
        try:
            graphdef, state = nnx.split(model)

            def f(state, values, graphdef=graphdef):
                full = list(leaves)
                for i, v in zip(arrays, values):
                    full[i] = v
                a, k = jax.tree.unflatten(treedef, full)
                return call(nnx.merge(graphdef, state), a, k)

            values = [leaves[i] for i in arrays]
            t0 = time.perf_counter()
            compiled = jax.jit(f).lower(state, values).compile()
            compile_s[label] = time.perf_counter() - t0
            for _ in range(3):
                jax.block_until_ready(compiled(state, values))
            samples = []
            deadline = time.perf_counter() + 2.0
            while len(samples) < 5 or (len(samples) < 50 and time.perf_counter() < deadline):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(state, values))
                samples.append(time.perf_counter() - t0)
            run_s[label] = statistics.median(samples)
        except Exception:  # noqa: BLE001 - timing is informative; the comparison stands
            pass
    return compile_s, run_s
