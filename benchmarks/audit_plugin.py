"""pytest plugin of the real-code audit (``real_audit.py``): runs every rewritten
function beside the original, on the arguments the package's own tests pass.

It runs inside the audit environment (``build/audit-venv``), in a pytest
process started by ``real_audit.py`` on the *original* copy of a package, and is
loaded with ``-p l2s_audit_plugin`` (the file is copied under that name, so
nothing else of ``benchmarks/`` lands on ``sys.path``).  It needs jax and numpy,
never loop2scan.

Two modes, chosen by environment variables:

``L2S_AUDIT_OUTCOMES=FILE``
    Every test's outcome is appended to FILE as a JSON line (``nodeid``,
    ``outcome``, ``when``, a short message).  Always on; this is all the plain
    before/after runs load (with ``doctest_namespace`` holding ``np``, ``jnp``,
    ``jax``, as the packages' own doctest set-ups do).
``L2S_AUDIT_SPEC=FILE`` and ``L2S_AUDIT_RESULT=FILE``
    The comparison mode.  FILE lists the *targets*: for each rewritten
    function (the outermost module-level function or method holding a
    rewritten loop) the original file, its ``__qualname__`` and the rewritten
    file.  Once the module is imported (checked after collection and before
    each test), every function object compiled from that ``def`` (found by its
    code object: file and qualified name, so re-exports, decorators such as
    ``jax.jit`` and class attributes are all covered) gets a trampoline as its
    ``__code__``: the same signature, a body that calls

    1. the original code, whose result is returned unchanged, then
    2. the rewritten code of the same ``def`` (compiled from the rewritten
       file, bound to the original module's namespace and closure so that
       classes, helpers and ``super()`` are the original ones; import lines
       the rewrite added are executed with the module's ``__name__`` and
       ``__package__`` so relative imports resolve) on a copy of the same
       arguments (NumPy arrays and containers copied, NumPy and ``random``
       generator states restored), and compares the outputs leaf by leaf.

    Under a JAX trace (``jit``, ``vmap``, ``grad``, a scan body...) the
    rewritten output is computed in the same trace; shapes and dtypes are
    compared while tracing and the values when the computation runs, through
    ``jax.debug.callback``.  Functions returned by the target (closures) are
    returned as paired callables that compare each call the same way.  At most
    ``max_calls`` calls per target are compared; later calls run the original
    only.  Calls made while the rewritten code runs go to the originals.

Results (per target: calls, compared, equal, different, crashed with the
error, traced but never run, notes) are written to ``L2S_AUDIT_RESULT`` after
every test and at the end of the session.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import gc
import json
import os
import random
import re
import sys
import threading
import traceback
import types
from typing import Any

import pytest

MAX_DETAILS = 3  # errors / differences kept per target
# Errors a framework raises when a module method runs twice in one scope (the
# rewritten call follows the original in the same flax linen scope): no verdict.
SECOND_CALL_REFUSED = {"NameInUseError"}
DISPATCH_NAME = "__l2s_audit_dispatch__"

CO_VARARGS = 0x04
CO_VARKEYWORDS = 0x08
CO_GENERATOR_LIKE = 0x20 | 0x80 | 0x100 | 0x200  # generator, coroutine, iterable coroutine, async generator


# --------------------------------------------------------------------------- outcomes (both modes)

class OutcomeLog:
    """Appends one JSON line per test phase that did not simply pass its setup/teardown."""

    def __init__(self, path: str) -> None:
        self.path = path

    def pytest_runtest_logreport(self, report) -> None:
        if report.when != "call" and report.passed:
            return
        outcome = report.outcome
        if report.when != "call" and report.failed:
            outcome = "error"
        message = ""
        if report.failed and report.longrepr is not None:
            text = str(getattr(report.longrepr, "reprcrash", None) or report.longrepr)
            message = " ".join(text.split())[:300]
        line = {"nodeid": report.nodeid, "when": report.when, "outcome": outcome, "message": message,
                "seconds": round(getattr(report, "duration", 0.0), 3)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            text = " ".join(str(report.longrepr).split())[-300:]
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"nodeid": report.nodeid, "when": "collect", "outcome": "error",
                                    "message": text}) + "\n")


@pytest.fixture(autouse=True)
def _l2s_audit_doctest_names(request):
    """The names the packages' doctests assume (their own conftest files provide them)."""
    if "doctest_namespace" in request.fixturenames or request.node.__class__.__name__ == "DoctestItem":
        namespace = request.getfixturevalue("doctest_namespace")
        import numpy as np
        namespace.setdefault("np", np)
        try:
            import jax
            import jax.numpy as jnp
            namespace.setdefault("jax", jax)
            namespace.setdefault("jnp", jnp)
        except ImportError:  # pragma: no cover - the audit environment has jax
            pass
    yield


# --------------------------------------------------------------------------- comparison

def _tolerance(dtype) -> tuple[float, float]:
    """(rtol, atol) for a floating or complex dtype, as loop2scan --check uses them."""
    import numpy as np

    name = np.dtype(dtype).name
    if name in ("float64", "complex128"):
        return 1e-9, 1e-12
    if name in ("float16", "bfloat16"):
        return 1e-2, 1e-2
    return 1e-4, 1e-5


def _is_tracer(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def _kind(x: Any) -> str:
    import jax
    import numpy as np

    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return "array"
    if isinstance(x, (bool, int, float, complex)):
        return "scalar"
    if x is None or isinstance(x, (str, bytes)):
        return "const"
    if isinstance(x, (types.FunctionType, functools.partial)):
        return "function"
    return "object"


def _key_data(x: Any) -> Any:
    """The raw bits of a typed PRNG key array (keys have no arithmetic)."""
    import jax

    dtype = getattr(x, "dtype", None)
    if dtype is not None and isinstance(x, jax.Array) and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _float_like(dtype) -> bool:
    import numpy as np

    try:
        return bool(np.issubdtype(dtype, np.inexact)) or np.dtype(dtype).name == "bfloat16"
    except TypeError:
        return False


def compare_concrete(a: Any, b: Any, where: str, diffs: list[str], notes: set[str], depth: int = 0,
                     arrays_only: bool = False) -> None:
    """Append to ``diffs`` every way in which ``b`` (rewritten) differs from ``a``
    (original).  ``arrays_only``: compare only the arrays reachable in both
    (the state of arguments after the call), ignoring everything else."""
    import jax
    import numpy as np

    a, b = _key_data(a), _key_data(b)
    ka, kb = _kind(a), _kind(b)
    if arrays_only and not (ka == kb == "array" or ka == kb == "object"):
        return
    if ka in ("array", "scalar") and kb in ("array", "scalar"):
        if type(a) is not type(b) and not (isinstance(a, jax.Array) and isinstance(b, jax.Array)):
            notes.add(f"{where or 'output'}: {type(a).__name__} before, {type(b).__name__} after")
        xa, xb = np.asarray(a), np.asarray(b)
        if ka == kb == "array":
            if xa.shape != xb.shape or xa.dtype != xb.dtype:
                diffs.append(f"{where or 'output'}: {xa.dtype}{list(xa.shape)} before, "
                             f"{xb.dtype}{list(xb.shape)} after")
                return
        elif xa.shape != xb.shape:
            diffs.append(f"{where or 'output'}: shape {list(xa.shape)} before, {list(xb.shape)} after")
            return
        if _float_like(xa.dtype) or _float_like(xb.dtype):
            rtol, atol = _tolerance(xa.dtype if _float_like(xa.dtype) else xb.dtype)
            fa, fb = xa.astype(np.complex128 if np.iscomplexobj(xa) else np.float64), \
                xb.astype(np.complex128 if np.iscomplexobj(xb) else np.float64)
            close = np.isclose(fa, fb, rtol=rtol, atol=atol, equal_nan=True)
            if not np.all(close):
                bad = ~close
                err = np.abs(fa - fb)[bad]
                rel = err / np.maximum(np.abs(fa[bad]), np.finfo(np.float64).tiny)
                keep = np.isfinite(err)
                worst = (f"max abs diff {float(err[keep].max()):.3g}, max rel diff {float(rel[keep].max()):.3g}"
                         if keep.any() else "nan/inf differ")
                diffs.append(f"{where or 'output'}: {int(bad.sum())} of {xa.size} values differ ({worst})")
        elif not np.array_equal(xa, xb):
            diffs.append(f"{where or 'output'}: {int(np.sum(xa != xb))} of {xa.size} values differ (exact dtype)")
        return
    if ka != kb:
        diffs.append(f"{where or 'output'}: {type(a).__name__} before, {type(b).__name__} after")
        return
    if ka == "const":
        if a != b:
            diffs.append(f"{where or 'output'}: {a!r:.60} before, {b!r:.60} after")
        return
    if ka == "object":
        if type(a) is not type(b):
            diffs.append(f"{where or 'output'}: {type(a).__name__} before, {type(b).__name__} after")
            return
        try:
            if a == b:
                return
        except Exception:  # noqa: BLE001 - objects whose == is not a bool
            pass
        va, vb = getattr(a, "__dict__", None), getattr(b, "__dict__", None)
        if isinstance(va, dict) and isinstance(vb, dict) and depth < 3:
            if sorted(va) != sorted(vb) and not arrays_only:
                diffs.append(f"{where or 'output'}: attributes {sorted(va)} before, {sorted(vb)} after")
                return
            for key in sorted(set(va) & set(vb)):
                compare_tree(va[key], vb[key], f"{where}.{key}", diffs, notes, depth + 1, arrays_only)
            return
        if not arrays_only:
            notes.add(f"{where or 'output'}: {type(a).__name__} objects not compared")


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def same_structure(ta, tb) -> bool:
    """Equal tree structures; functions held as node data (e.g. a NamedTuple
    node of closures) count as equal when their names are."""
    if ta == tb:
        return True
    return ta.num_leaves == tb.num_leaves and _ADDRESS.sub("", str(ta)) == _ADDRESS.sub("", str(tb))


def compare_tree(a: Any, b: Any, where: str, diffs: list[str], notes: set[str], depth: int = 0,
                 arrays_only: bool = False) -> None:
    import jax

    try:
        la, ta = jax.tree_util.tree_flatten_with_path(a)
        lb, tb = jax.tree_util.tree_flatten_with_path(b)
    except Exception as e:  # noqa: BLE001
        if not arrays_only:
            notes.add(f"{where or 'output'}: not flattened ({type(e).__name__})")
        return
    if not same_structure(ta, tb):
        if arrays_only:
            return
        diffs.append(f"{where or 'output'}: structure {_ADDRESS.sub('', str(ta))[:150]} before, "
                     f"{_ADDRESS.sub('', str(tb))[:150]} after")
        return
    for (path, x), (_, y) in zip(la, lb):
        compare_concrete(x, y, where + jax.tree_util.keystr(path), diffs, notes, depth, arrays_only)


def traced_check(a: Any, b: Any) -> tuple[list[str], Any]:
    """Static differences (structure, shapes, dtypes) and, when there are none,
    a traced pair (all_close, max_abs_diff) of the values."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    if not same_structure(ta, tb):
        return [f"structure {_ADDRESS.sub('', str(ta))[:150]} before, {_ADDRESS.sub('', str(tb))[:150]} after"], None
    diffs, oks, errs = [], [], []
    for (path, x), (_, y) in zip(la, lb):
        where = jax.tree_util.keystr(path) or "output"
        x, y = _key_data(x), _key_data(y)
        if _kind(x) not in ("array", "scalar") or _kind(y) not in ("array", "scalar"):
            if _kind(x) != _kind(y):
                diffs.append(f"{where}: {type(x).__name__} before, {type(y).__name__} after")
            continue
        sx, sy = jnp.shape(x), jnp.shape(y)
        dx, dy = jnp.result_type(x), jnp.result_type(y)
        if sx != sy or (_kind(x) == _kind(y) == "array" and dx != dy):
            diffs.append(f"{where}: {dx}{list(sx)} before, {dy}{list(sy)} after")
            continue
        x, y = jnp.asarray(x), jnp.asarray(y)
        if _float_like(dx):
            rtol, atol = _tolerance(dx)
            xa, ya = x.astype(jnp.result_type(dx, jnp.float32)), y.astype(jnp.result_type(dx, jnp.float32))
            oks.append(jnp.all(jnp.isclose(xa, ya, rtol=rtol, atol=atol, equal_nan=True)))
            err = jnp.abs(xa - ya)
            errs.append(jnp.max(jnp.where(jnp.isfinite(err), err, 0), initial=0.0).astype(jnp.float32))
        else:
            oks.append(jnp.all(x == y))
    if diffs or not oks:
        return diffs, None
    ok = jnp.all(jnp.stack(oks))
    err = jnp.max(jnp.stack(errs)) if errs else jnp.zeros((), np.float32)
    return [], (ok, err)


# --------------------------------------------------------------------------- targets

class Target:
    """One rewritten ``def``: its results and the function objects it is installed on."""

    def __init__(self, spec: dict, max_calls: int) -> None:
        self.key = spec["key"]
        self.path = os.path.realpath(spec["path"])
        self.module = spec.get("module")
        self.qualname = spec["qualname"]
        self.rewritten_path = spec["rewritten_path"]
        self.max_calls = max_calls
        self.installed = 0
        self.install_error: str | None = None
        self.calls = 0  # calls seen
        self.attempted = 0  # calls where the rewritten version was run
        self.compared = 0
        self.equal = 0
        self.different: list[str] = []
        self.n_different = 0
        self.crashed: list[str] = []
        self.n_crashed = 0
        self.original_raised = 0
        self.traced = 0
        self.traced_compared = 0
        self.notes: set[str] = set()
        self.tests: list[str] = []
        self.lock = threading.Lock()

    def to_json(self) -> dict:
        return {
            "key": self.key, "qualname": self.qualname, "installed": self.installed,
            "install_error": self.install_error, "calls": self.calls, "attempted": self.attempted,
            "compared": self.compared, "equal": self.equal, "different": self.n_different,
            "different_details": self.different, "crashed": self.n_crashed, "crash_details": self.crashed,
            "original_raised": self.original_raised, "traced": self.traced,
            "traced_compared": self.traced_compared, "notes": sorted(self.notes)[:10], "tests": self.tests[:5],
        }


_STATE = threading.local()


def _in_rewritten() -> bool:
    return getattr(_STATE, "depth", 0) > 0


def _copy_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A deep copy of the arguments (objects such as modules with mutable state
    included), so in-place changes by the original call do not reach the
    rewritten one and can be compared afterwards.  Under a trace, or when an
    argument cannot be deep-copied: containers rebuilt and NumPy arrays copied."""
    import jax
    import numpy as np

    try:
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        if not any(_is_tracer(x) for x in leaves):
            try:
                copied = copy.deepcopy((args, kwargs))
                if _same_types((args, kwargs), copied):
                    return copied[0], copied[1], True
            except Exception:  # noqa: BLE001 - objects that refuse to be copied
                pass
        plain = _plain((args, kwargs))
        if not any(isinstance(x, np.ndarray) for x in leaves) and not _has_mutable((args, kwargs)):
            return args, kwargs, plain
        leaves = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in leaves]
        args2, kwargs2 = jax.tree_util.tree_unflatten(treedef, leaves)
        return args2, kwargs2, plain
    except Exception:  # noqa: BLE001 - arguments that do not round-trip are shared
        return args, kwargs, False


def _plain(x: Any, depth: int = 0) -> bool:
    """Arrays, numbers, strings, functions and builtin containers of them: no
    object whose state both calls could share."""
    if isinstance(x, (list, tuple)):
        return depth < 8 and all(_plain(y, depth + 1) for y in x)
    if isinstance(x, dict):
        return depth < 8 and all(_plain(y, depth + 1) for y in x.values())
    return _kind(x) != "object"


def _same_types(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether a deep copy kept the types of everything it copied (a framework
    may copy a mutable variable as its bare value)."""
    if type(a) is not type(b):
        return False
    if depth > 4:
        return True
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_types(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_types(a[k], b[k], depth + 1) for k in list(a)[:100])
    da, db = getattr(a, "__dict__", None), getattr(b, "__dict__", None)
    if isinstance(da, dict) and isinstance(db, dict):
        return all(_same_types(v, db.get(k), depth + 1) for k, v in list(da.items())[:100])
    return True


def _has_mutable(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, (list, dict, set)):
        return True
    if isinstance(obj, tuple) and depth < 4:
        return any(_has_mutable(x, depth + 1) for x in obj)
    return False


def _random_state():
    import numpy as np

    return np.random.get_state(), random.getstate()


def _set_random_state(state) -> None:
    import numpy as np

    np.random.set_state(state[0])
    random.setstate(state[1])


def _short_error(e: BaseException, rewritten_path: str | None = None) -> str:
    """``Type at file:line (function): message``, the place being the last
    frame in the rewritten file when there is one, else the last frame."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "l2s_audit_plugin" not in f.filename]
    mine = [f for f in frames if rewritten_path and f.filename == rewritten_path]
    frame = (mine or frames or [None])[-1]
    where = f" at {os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})" if frame else ""
    message = " ".join(str(e).split())[:240]
    return f"{type(e).__name__}{where}: {message}"


def compare_call(target: Target, original, rewritten, args: tuple, kwargs: dict, test: str | None):
    """Run ``original`` (its result is returned, or its exception raised) and,
    within the call budget, ``rewritten`` on copied arguments; record the comparison."""
    with target.lock:
        target.calls += 1
        budget = target.attempted < target.max_calls and not _in_rewritten()
        if budget:
            target.attempted += 1
            if test and test not in target.tests:
                target.tests.append(test)
    if not budget:
        return original(*args, **kwargs)
    args2, kwargs2, separate = _copy_arguments(args, kwargs)
    state = _random_state()
    try:
        result = original(*args, **kwargs)
    except BaseException:
        with target.lock:
            target.original_raised += 1
        raise
    after_original = _random_state()
    _set_random_state(state)
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        result2 = rewritten(*args2, **kwargs2)
    except Exception as e:  # noqa: BLE001 - the rewrite crashed where the original ran
        if type(e).__name__ in SECOND_CALL_REFUSED:
            target.notes.add(f"not compared: {type(e).__name__} (the framework refuses a second call of the "
                             f"method in the same module scope)")
            return result
        with target.lock:
            target.n_crashed += 1
            if len(target.crashed) < MAX_DETAILS:
                target.crashed.append(_short_error(e, target.rewritten_path))
        return result
    finally:
        _STATE.depth -= 1
        _set_random_state(after_original)
    try:
        result = _record(target, result, result2, args, kwargs, args2, kwargs2, separate)
    except Exception as e:  # noqa: BLE001 - a failure of the comparison itself
        target.notes.add(f"comparison failed: {_short_error(e)[:200]}")
    return result


def _record(target: Target, result, result2, args, kwargs, args2, kwargs2, separate: bool = True):
    import jax

    leaves = jax.tree_util.tree_leaves((result, result2, args, kwargs))
    result, paired = _pair_functions(target, result, result2)
    if any(_is_tracer(x) for x in leaves):
        _record_traced(target, result if not paired else _strip_functions(result), _strip_functions(result2),
                       separate)
        return result
    diffs: list[str] = []
    notes: set[str] = set()
    if paired:
        compare_tree(_strip_functions(result), _strip_functions(result2), "", diffs, notes)
    else:
        compare_tree(result, result2, "", diffs, notes)
    # arrays changed in place (NumPy arrays, module state) must change the same way
    if args2 is not args or kwargs2 is not kwargs:
        compare_tree((args, kwargs), (args2, kwargs2), "<arguments after the call>", diffs, notes, arrays_only=True)
    with target.lock:
        target.notes |= notes
        only_functions = paired and not jax.tree_util.tree_leaves(_strip_functions(result))
        if diffs and not separate:
            # both calls saw the same objects, which the original call may have changed
            target.notes.add(SHARED_STATE)
        elif diffs:
            target.n_different += 1
            if len(target.different) < MAX_DETAILS:
                target.different.append("; ".join(diffs)[:400])
        elif not only_functions:
            target.compared += 1
            target.equal += 1
    return result


SHARED_STATE = ("not compared: the arguments hold objects that could not be copied, whose state the "
                "original call may have changed")


def _record_traced(target: Target, a, b, separate: bool = True) -> None:
    import jax

    with target.lock:
        target.traced += 1
    try:
        diffs, pair = traced_check(a, b)
    except Exception as e:  # noqa: BLE001
        target.notes.add(f"traced, not compared: {_short_error(e)[:200]}")
        return
    if diffs:
        with target.lock:
            target.n_different += 1
            if len(target.different) < MAX_DETAILS:
                target.different.append("under tracing: " + "; ".join(diffs)[:400])
        return
    if pair is None:
        return

    def report(ok, err) -> None:
        import numpy as np

        with target.lock:
            target.traced_compared += 1
            target.compared += 1
            if bool(np.all(np.asarray(ok))):
                target.equal += 1
            elif not separate:
                target.compared -= 1
                target.traced_compared -= 1
                target.notes.add(SHARED_STATE)
            else:
                target.n_different += 1
                if len(target.different) < MAX_DETAILS:
                    target.different.append(f"values differ under tracing (max abs diff {float(np.max(err)):.3g})")

    try:
        jax.debug.callback(report, *pair)
    except Exception as e:  # noqa: BLE001 - e.g. a trace where callbacks are not allowed
        target.notes.add(f"traced, not compared: {_short_error(e)[:200]}")


def _strip_functions(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: None if _kind(x) == "function" else x, tree)


def _pair_functions(target: Target, result, result2):
    """Replace each function in ``result`` by a callable that also runs the
    matching function of ``result2`` (closures built by the target)."""
    import jax

    try:
        la, ta = jax.tree_util.tree_flatten(result)
        lb, tb = jax.tree_util.tree_flatten(result2)
    except Exception:  # noqa: BLE001
        return result, False
    if not same_structure(ta, tb) or not any(_kind(x) == "function" for x in la):
        return result, False
    out = []
    for x, y in zip(la, lb):
        if _kind(x) == "function" and callable(y):
            out.append(_paired(target, x, y))
        else:
            out.append(x)
    return jax.tree_util.tree_unflatten(ta, out), True


def _paired(target: Target, original, rewritten):
    @functools.wraps(original)
    def paired(*args, **kwargs):
        return compare_call(target, original, rewritten, args, kwargs, _current_test())
    return paired


def _current_test() -> str | None:
    return getattr(_STATE, "test", None) or _SESSION_TEST[0]


_SESSION_TEST: list[str | None] = [None]


# --------------------------------------------------------------------------- installing

def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _signature_source(code: types.CodeType, name: str) -> tuple[str, str, str]:
    """(parameter list, positional tuple, keyword dict) source for a trampoline of ``code``."""
    n_pos, n_posonly, n_kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    names = code.co_varnames
    positional = list(names[:n_pos])
    kwonly = list(names[n_pos:n_pos + n_kwonly])
    index = n_pos + n_kwonly
    varargs = varkw = None
    if code.co_flags & CO_VARARGS:
        varargs = names[index]
        index += 1
    if code.co_flags & CO_VARKEYWORDS:
        varkw = names[index]
    params = []
    for i, p in enumerate(positional):
        params.append(p)
        if n_posonly and i == n_posonly - 1:
            params.append("/")
    if varargs:
        params.append("*" + varargs)
    elif kwonly:
        params.append("*")
    params.extend(kwonly)
    if varkw:
        params.append("**" + varkw)
    pos = "(" + "".join(p + ", " for p in positional) + (f"*{varargs}," if varargs else "") + ")"
    kw = "{" + "".join(f"{k!r}: {k}, " for k in kwonly) + (f"**{varkw}" if varkw else "") + "}"
    return ", ".join(params), pos, kw


def make_trampoline(fn: types.FunctionType, index: int) -> types.CodeType:
    """A code object with ``fn``'s signature and free-variable count whose body
    calls ``__l2s_audit_dispatch__(index, args, kwargs)``."""
    code = fn.__code__
    params, pos, kw = _signature_source(code, code.co_name)
    freevars = code.co_freevars
    lines = ["def __l2s_outer__():"]
    if freevars:
        lines.append("    " + " = ".join(freevars) + " = None")
    lines.append(f"    def __l2s_trampoline__({params}):")
    if freevars:
        lines.append("        if False: (" + "".join(v + ", " for v in freevars) + ")")
    lines.append(f"        return {DISPATCH_NAME}({index}, {pos}, {kw})")
    lines.append("    return __l2s_trampoline__")
    namespace: dict = {}
    exec(compile("\n".join(lines), "<l2s-audit-trampoline>", "exec"), namespace)
    tramp = namespace["__l2s_outer__"]().__code__
    if len(tramp.co_freevars) != len(freevars):
        raise RuntimeError("free variables of the trampoline do not match")
    return tramp.replace(co_name=code.co_name, co_qualname=code.co_qualname, co_filename=code.co_filename,
                         co_firstlineno=code.co_firstlineno)


class Auditor:
    """Finds the target functions once their modules are imported and installs the trampolines."""

    def __init__(self, spec: dict, result_path: str) -> None:
        self.result_path = result_path
        self.targets = [Target(t, spec.get("max_calls", 20)) for t in spec["targets"]]
        self.pending = list(self.targets)
        self.entries: list[tuple[Target, Any, Any]] = []  # index -> (target, original copy, rewritten)
        self.added_names: dict[str, dict] = {}  # rewritten path -> names bound by the added imports
        self.added_steps: dict[str, object] = {}  # rewritten path -> code of the module-level steps it added
        self.rewritten_code: dict[str, types.CodeType] = {}
        self._realpaths: dict[str, str] = {}
        self._modules_seen = 0

    # -- discovery
    def _real(self, filename: str) -> str:
        real = self._realpaths.get(filename)
        if real is None:
            real = self._realpaths[filename] = os.path.realpath(filename)
        return real

    def _loaded_files(self) -> set[str]:
        files = set()
        for module in list(sys.modules.values()):
            f = getattr(module, "__file__", None)
            if isinstance(f, str):
                files.add(self._real(f))
        return files

    def install_pending(self) -> None:
        if not self.pending or len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        loaded = self._loaded_files()
        ready = [t for t in self.pending if t.path in loaded]
        if not ready:
            return
        wanted = {(t.path, t.qualname): t for t in ready}
        found: dict[tuple[str, str], list] = {k: [] for k in wanted}
        for obj in gc.get_objects():
            if type(obj) is types.FunctionType:
                code = obj.__code__
                key = (self._real(code.co_filename), code.co_qualname)
                if key in found:
                    found[key].append(obj)
        for key, target in wanted.items():
            self.pending.remove(target)
            functions = [f for f in found[key] if DISPATCH_NAME not in f.__code__.co_names]
            if not functions:
                target.install_error = "no function object found for this def after import"
                continue
            for fn in functions:
                try:
                    self._install(target, fn)
                except Exception as e:  # noqa: BLE001
                    target.install_error = _short_error(e)

    def _rewritten_function(self, target: Target, fn: types.FunctionType) -> types.FunctionType:
        code = self.rewritten_code.get(target.key)
        if code is None:
            with open(target.rewritten_path, encoding="utf-8") as f:
                text = f.read()
            module_code = compile(text, target.rewritten_path, "exec", dont_inherit=True)
            matches = [c for c in _code_objects(module_code) if c.co_qualname == target.qualname]
            if not matches:
                raise LookupError(f"{target.qualname} not found in the rewritten file")
            code = self.rewritten_code[target.key] = matches[0]
        self._add_imports(target, fn)
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
        missing = [v for v in code.co_freevars if v not in cells]
        if missing:
            raise LookupError(f"free variables {missing} of the rewritten code are not in the original")
        closure = tuple(cells[v] for v in code.co_freevars) or None
        new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
        new.__kwdefaults__ = fn.__kwdefaults__
        new.__qualname__ = fn.__qualname__
        return new

    def _add_imports(self, target: Target, fn: types.FunctionType) -> None:
        """Execute the import lines the rewrite added and bind the names the module lacks."""
        names = self.added_names.get(target.rewritten_path)
        if names is None:
            with open(target.rewritten_path, encoding="utf-8") as f:
                new_tree = ast.parse(f.read())
            with open(target.path, encoding="utf-8") as f:
                old_tree = ast.parse(f.read())
            old = {ast.dump(s) for s in old_tree.body if isinstance(s, (ast.Import, ast.ImportFrom))}
            added = [s for s in new_tree.body if isinstance(s, (ast.Import, ast.ImportFrom)) and ast.dump(s) not in old]
            g = fn.__globals__
            namespace = {"__name__": g.get("__name__"), "__package__": g.get("__package__"),
                         "__builtins__": builtins}
            if added:
                exec(compile(ast.Module(body=added, type_ignores=[]), target.rewritten_path, "exec"), namespace)
            names = self.added_names[target.rewritten_path] = {
                k: v for k, v in namespace.items() if k not in ("__name__", "__package__", "__builtins__")}
            # the step functions the rewrite defined at module level (the original module has no such names)
            old_names = {s.name for s in old_tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                          ast.ClassDef))}
            steps = [s for s in new_tree.body if isinstance(s, ast.FunctionDef) and s.name not in old_names]
            self.added_steps[target.rewritten_path] = compile(ast.Module(body=steps, type_ignores=[]),
                                                              target.rewritten_path, "exec") if steps else None
        for k, v in names.items():
            fn.__globals__.setdefault(k, v)
        steps_code = self.added_steps.get(target.rewritten_path)
        if steps_code is not None:
            # defined in the original module's namespace, so that they see its helpers; their names are new
            exec(steps_code, fn.__globals__)

    def _install(self, target: Target, fn: types.FunctionType) -> None:
        if fn.__code__.co_flags & CO_GENERATOR_LIKE:
            target.install_error = "generator or coroutine function: not wrapped"
            return
        rewritten = self._rewritten_function(target, fn)
        original = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        original.__kwdefaults__ = fn.__kwdefaults__
        original.__qualname__ = fn.__qualname__
        index = len(self.entries)
        tramp = make_trampoline(fn, index)
        self.entries.append((target, original, rewritten))
        fn.__globals__[DISPATCH_NAME] = self.dispatch
        fn.__code__ = tramp
        target.installed += 1

    def dispatch(self, index: int, args: tuple, kwargs: dict):
        target, original, rewritten = self.entries[index]
        return compare_call(target, original, rewritten, args, kwargs, _current_test())

    # -- results
    def write(self) -> None:
        data = {"targets": [t.to_json() for t in self.targets],
                "not_imported": [t.key for t in self.pending]}
        tmp = self.result_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.result_path)

    # -- pytest hooks
    def pytest_collection_finish(self, session) -> None:
        self.install_pending()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        _SESSION_TEST[0] = item.nodeid
        self.install_pending()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item) -> None:
        self.install_pending()

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        self.write()

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        try:
            import jax
            jax.effects_barrier()
        except Exception:  # noqa: BLE001
            pass
        self.write()


def pytest_configure(config) -> None:
    outcomes = os.environ.get("L2S_AUDIT_OUTCOMES")
    if outcomes:
        config.pluginmanager.register(OutcomeLog(outcomes), "l2s_audit_outcomes")
    spec_path = os.environ.get("L2S_AUDIT_SPEC")
    result_path = os.environ.get("L2S_AUDIT_RESULT")
    if spec_path and result_path:
        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)
        auditor = Auditor(spec, result_path)
        config.pluginmanager.register(auditor, "l2s_audit_auditor")
        auditor.write()
