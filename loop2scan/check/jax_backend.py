"""The JAX backend of ``--check`` (imported only by the worker process).

Another framework plugs in with a class of the same methods: its own device
naming, layout conversion, calls, gradients, state and timings (or, where the
check builds the models itself, a ``run_example`` method: ``torch_xla_backend``).
Tolerances and the comparison of host arrays are shared (``compare.py``).
"""

from __future__ import annotations

import inspect
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .compare import DEFAULT_TOLERANCES, GRADIENT_FACTOR, Tolerances, aval, compare_arrays

__all__ = ["DEFAULT_TOLERANCES", "GRADIENT_FACTOR", "JaxBackend", "Tolerances"]


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _is_float(x: Any) -> bool:
    return _is_array(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)


def _path_str(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


class JaxBackend:
    def __init__(self, device: str = "default") -> None:
        self.device = device
        self.key = jax.random.PRNGKey(20261122)

    # -- device -------------------------------------------------------------
    def device_name(self) -> str:
        d = jax.devices()[0]
        platform = {"gpu": "cuda"}.get(d.platform, d.platform)
        return f"{platform}:{d.id}"

    def tolerances(self, rtol, atol) -> Tolerances:
        return Tolerances(rtol, atol)

    # -- inputs ---------------------------------------------------------------
    def to_rewritten_layout(self, fn, args: tuple, kwargs: dict, names: list[str]):
        """Stack the per-layer parameter lists among the arguments (the layout
        the rewritten code expects), with the exact converter."""
        if not names:
            return args, kwargs, {}
        from loop2scan.layout import stack_layers

        sig = inspect.signature(fn)
        bound = sig.bind_partial(*args, **kwargs)
        converted = {}
        for name in names:
            if name in bound.arguments:
                value = bound.arguments[name]
                bound.arguments[name] = jax.tree.map(jnp.asarray, stack_layers(value))
                converted[name] = True
        return tuple(bound.args), dict(bound.kwargs), converted

    def cast_floats(self, inputs, dtype: str):
        """The inputs with every floating-point array cast to ``dtype``."""
        target = jnp.dtype(dtype)

        def cast(x):
            return jnp.asarray(x).astype(target) if _is_float(x) else x

        return jax.tree.map(cast, inputs)

    # -- calls ------------------------------------------------------------------
    def call(self, fn, args: tuple, kwargs: dict) -> Any:
        out = fn(*args, **kwargs)
        return jax.block_until_ready(out)

    def state(self, instance: Any) -> Any:
        """Array attributes of the object a method runs on (functional JAX code
        leaves them alone; a rewrite must too)."""
        if instance is None:
            return None
        return {k: v for k, v in sorted(vars(instance).items()) if _is_array(v)}

    def restore(self, instance: Any, state: Any) -> None:
        if instance is not None and state:
            for k, v in state.items():
                setattr(instance, k, v)

    # -- comparison --------------------------------------------------------------
    def compare(self, before: Any, after: Any, tol: Tolerances, what: str, differences: list[str]) -> dict:
        lb, tb = jax.tree_util.tree_flatten_with_path(before)
        la, ta = jax.tree_util.tree_flatten_with_path(after)
        stats = {"max_abs": 0.0, "max_rel": 0.0}
        if tb != ta:
            differences.append(f"{what} structure: {tb} before, {ta} after")
            return stats
        for (path, x), (_, y) in zip(lb, la):
            name = f"{what} {_path_str(path)}"
            if not (_is_array(x) or _is_array(y)):
                if x != y:
                    differences.append(f"{name}: {x!r} before, {y!r} after")
                continue
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                differences.append(f"{name}: {_aval(x)} before, {_aval(y)} after")
                continue
            compare_arrays(name, x, y, tol, stats, differences)
        return stats

    # -- gradients ------------------------------------------------------------------
    def gradients(self, fn_before, fn_after, args, kwargs, args_after, kwargs_after, converted):
        """VJPs with one random cotangent, w.r.t. every floating-point input leaf.
        Gradients of converted (stacked) parameters are compared in the stacked
        layout: the original's list gradients are stacked with the converter."""
        g_before = self._vjp(fn_before, args, kwargs)
        if g_before is None:
            return None, None
        g_after = self._vjp(fn_after, args_after, kwargs_after, cotangent_like=self._last_cotangent)
        if converted:
            from loop2scan.layout import stack_layers

            sig = inspect.signature(fn_before)
            gb_args, gb_kwargs = g_before
            bound = sig.bind_partial(*gb_args, **gb_kwargs)
            for name in converted:
                if name in bound.arguments:
                    bound.arguments[name] = stack_layers(bound.arguments[name])
            g_before = (tuple(bound.args), dict(bound.kwargs))
        return g_before, g_after

    _last_cotangent = None

    def _vjp(self, fn, args, kwargs, cotangent_like=None):
        leaves, treedef = jax.tree.flatten((args, kwargs))
        float_idx = [i for i, x in enumerate(leaves) if _is_float(x)]
        if not float_idx:
            return None

        def f(*floats):
            full = list(leaves)
            for i, v in zip(float_idx, floats):
                full[i] = v
            a, k = jax.tree.unflatten(treedef, full)
            out = fn(*a, **k)
            return [o for o in jax.tree.leaves(out) if _is_float(o)]

        primals = [jnp.asarray(leaves[i]) for i in float_idx]
        out, vjp = jax.vjp(f, *primals)
        if cotangent_like is None:
            keys = jax.random.split(self.key, max(len(out), 1))
            cot = [jax.random.normal(k, o.shape, o.dtype) if jnp.issubdtype(o.dtype, jnp.floating)
                   else jnp.zeros_like(o) for k, o in zip(keys, out)]
            self._last_cotangent = cot
        else:
            cot = cotangent_like
        grads = vjp(cot)
        full = [None] * len(leaves)
        for i, g in zip(float_idx, grads):
            full[i] = np.asarray(g)
        # non-float leaves get no gradient: keep them out of the comparison
        full = [g if g is not None else np.zeros(()) for g in full]
        return jax.tree.unflatten(treedef, full)

    # -- timings ----------------------------------------------------------------------
    def timings(self, fn_before, fn_after, args, kwargs, args_after, kwargs_after):
        compile_s = {"before": None, "after": None}
        run_s = {"before": None, "after": None}
        for label, fn, a, k in (("before", fn_before, args, kwargs), ("after", fn_after, args_after, kwargs_after)):
            try:
                static = tuple(i for i, x in enumerate(a) if _static(x))
                jitted = jax.jit(fn, static_argnums=static)
                t0 = time.perf_counter()
                compiled = jitted.lower(*a, **k).compile()
                compile_s[label] = time.perf_counter() - t0
                dyn = [x for i, x in enumerate(a) if i not in static]
                for _ in range(3):
                    jax.block_until_ready(compiled(*dyn, **k))
                samples = []
                deadline = time.perf_counter() + 2.0
                while len(samples) < 5 or (len(samples) < 50 and time.perf_counter() < deadline):
                    t0 = time.perf_counter()
                    jax.block_until_ready(compiled(*dyn, **k))
                    samples.append(time.perf_counter() - t0)
                run_s[label] = statistics.median(samples)
            except Exception:  # noqa: BLE001 - timing is informative; the comparison stands
                pass
        return compile_s, run_s

    def eager_calls(self, fn_before, fn_after, args, kwargs, args_after, kwargs_after, calls: int = 3) -> dict:
        """Calls outside ``jit``, before and after: the median time of the calls
        after the first and the XLA compilations they triggered.  A scan whose
        step is a closure made on every call compiles on every eager call; a step
        defined once compiles on the first call only."""
        out = {}
        for label, fn, a, k in (("before", fn_before, args, kwargs), ("after", fn_after, args_after, kwargs_after)):
            compiles = []

            def listener(event: str, duration: float, **_: Any) -> None:
                if event == "/jax/core/compile/backend_compile_duration":
                    compiles.append(duration)

            jax.monitoring.register_event_duration_secs_listener(listener)
            try:
                jax.block_until_ready(fn(*a, **k))  # the first call compiles what it needs
                first = len(compiles)
                samples = []
                for _ in range(calls - 1):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(*a, **k))
                    samples.append(time.perf_counter() - t0)
                out[label] = {"repeat_call_s": statistics.median(samples),
                              "compiles_per_repeat_call": (len(compiles) - first) / (calls - 1)}
            except Exception:  # noqa: BLE001 - timing is informative; the comparison stands
                out[label] = None
            finally:
                _unregister(listener)
        return out


def _unregister(listener) -> None:
    try:
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(listener)
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - older or newer JAX
        pass


def _static(x: Any) -> bool:
    """Arguments that must be Python values at trace time (sizes, flags, functions)."""
    return isinstance(x, (bool, int, str, type(None))) or callable(x) and not _is_array(x)


def _aval(x: np.ndarray) -> str:
    return aval(x.shape, x.dtype)
