"""Helpers shared by the tests: load source as a module, rewrite it, and check
that original and rewritten code compute the same outputs and gradients."""

from __future__ import annotations

import itertools
import types
from typing import Iterable, Optional, Sequence

import numpy as np

from loop2scan import rewrite_source

_counter = itertools.count()

#: A small module with one scannable loop (an Elman RNN that stacks its states).
SMALL_RNN = '''\
import jax
import jax.numpy as jnp


def rnn(w, xs, h):
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ w + h)
        hs.append(h)
    return h, jnp.stack(hs)
'''


def load(src: str, name: Optional[str] = None) -> types.ModuleType:
    """Execute ``src`` as a fresh module."""
    name = name or f"_l2s_test_module_{next(_counter)}"
    mod = types.ModuleType(name)
    mod.__file__ = f"<{name}>"
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def rewrite(src: str, framework: str = "jax", layout: str = "stacked"):
    result = rewrite_source(src, framework, layout)
    assert result.error is None, result.error
    return result


def statuses(result) -> list[tuple[int, str, str]]:
    return [(loop.line, loop.status, loop.code) for loop in result.loops]


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6, what="output") -> None:
    import jax

    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    # the original and the rewritten module each define their own classes: compare by name
    assert ta == tb or str(ta) == str(tb), f"{what}: structure differs: {ta} vs {tb}"
    for i, (x, y) in enumerate(zip(la, lb)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"{what} leaf {i}: shape {x.shape} vs {y.shape}"
        assert x.dtype == y.dtype, f"{what} leaf {i}: dtype {x.dtype} vs {y.dtype}"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what} leaf {i}")


def _float_leaves_mask(args):
    import jax
    import jax.numpy as jnp

    def is_float(x):
        return isinstance(x, (jax.Array, np.ndarray)) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)

    return jax.tree.map(is_float, args)


def dtype_mode(mode: str):
    """A context in which JAX computes: ``"default"``, ``"strict"`` dtype
    promotion, or ``"x64"`` (64-bit types enabled)."""
    import contextlib

    import jax

    if mode == "strict":
        return jax.numpy_dtype_promotion("strict")
    if mode == "x64":
        return jax.enable_x64(True)
    assert mode == "default", mode
    return contextlib.nullcontext()


def check_equivalent(src: str, fn: str, cases: Iterable[Sequence], *, rewritten: Optional[int] = None,
                     grad: bool = True, jit: bool = True, static_argnums: Sequence[int] = (),
                     rtol: float = 1e-5, atol: float = 1e-6, seed: int = 0, modes: Sequence[str] = ()):
    """Rewrite ``src``; for each argument tuple compare the original function
    with the rewritten one (eagerly and under ``jax.jit``), and their VJPs with a
    random cotangent with respect to every floating-point argument leaf.
    Returns the rewrite result."""
    import jax

    result = rewrite(src)
    n = sum(1 for loop in result.loops if loop.status == "rewritten")
    if rewritten is not None:
        assert n == rewritten, f"expected {rewritten} rewrites, got {statuses(result)}"
    assert result.new_text is not None, f"nothing was rewritten: {statuses(result)}"
    a = getattr(load(src), fn)
    b = getattr(load(result.new_text), fn)
    key = jax.random.PRNGKey(seed)
    cases = list(cases)
    for mode in ("default", *modes):
        with dtype_mode(mode):
            _compare(a, b, cases, key, grad=grad, jit=jit, static_argnums=static_argnums, rtol=rtol, atol=atol)
    return result


def _compare(a, b, cases, key, *, grad, jit, static_argnums, rtol, atol) -> None:
    import jax
    import jax.numpy as jnp

    for args in cases:
        args = tuple(args)
        want = a(*args)
        assert_tree_close(want, b(*args), rtol, atol, "eager output")
        if jit:
            want_jit = jax.jit(a, static_argnums=tuple(static_argnums))(*args)
            got = jax.jit(b, static_argnums=tuple(static_argnums))(*args)
            assert_tree_close(want_jit, got, rtol, atol, "jit output")
        if not grad:
            continue
        mask = _float_leaves_mask(args)
        diff_idx = [i for i, m in enumerate(mask) if any(jax.tree.leaves(m))]
        if not diff_idx:
            continue

        def part(f):
            def g(*diff):
                full = list(args)
                for i, d in zip(diff_idx, diff):
                    full[i] = d
                out = f(*full)
                return jax.tree.map(lambda x: x if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
                                    else jnp.zeros((), jnp.float32), out)
            return g

        primals = [args[i] for i in diff_idx]
        out_a, vjp_a = jax.vjp(part(a), *primals)
        out_b, vjp_b = jax.vjp(part(b), *primals)
        leaves, tree = jax.tree.flatten(out_a)
        keys = jax.random.split(key, max(len(leaves), 1))
        cot = jax.tree.unflatten(tree, [jax.random.normal(k, jnp.shape(x), jnp.asarray(x).dtype)
                                        for k, x in zip(keys, leaves)])
        # the same cotangent leaves, in each function's own output structure
        cot_b = jax.tree.unflatten(jax.tree.structure(out_b), jax.tree.leaves(cot))
        assert_tree_close(vjp_a(cot), vjp_b(cot_b), max(rtol, 1e-4), max(atol, 1e-5), "gradient")
