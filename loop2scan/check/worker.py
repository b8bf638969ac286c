"""The ``--check`` worker: ``python -m loop2scan.check.worker`` reads a JSON spec
on stdin and prints one JSON result line.

It loads the original module normally (as part of its package, so relative
imports work) and the rewritten source next to it under another name with the
same ``__package__``; builds each example's inputs with its factory; runs both
versions through the framework backend (outputs, gradients, state, compile
and run time, on the framework's default device); and compares.  The
backend follows the spec's framework (``jax_backend``, with ``flax_backend``
for NNX layer stacks; ``torch_xla_backend``), and only that framework is
imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import traceback
import types
from typing import Any


def _package_name(path: str) -> tuple[str, str]:
    """(directory to put on sys.path, dotted module name) for a file, walking up
    through ``__init__.py`` packages."""
    path = os.path.abspath(path)
    directory, filename = os.path.split(path)
    parts = [os.path.splitext(filename)[0]]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, pkg = os.path.split(directory)
        parts.insert(0, pkg)
    return directory, ".".join(parts)


def load_original(path: str) -> types.ModuleType:
    base, name = _package_name(path)
    if base not in sys.path:
        sys.path.insert(0, base)
    if "." in name:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_rewritten(original: types.ModuleType, text: str) -> types.ModuleType:
    name = f"{original.__name__}__loop2scan_rewritten"
    module = types.ModuleType(name)
    module.__file__ = original.__file__
    module.__package__ = original.__package__
    sys.modules[name] = module
    exec(compile(text, original.__file__ or name, "exec"), module.__dict__)
    return module


def resolve(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj



def bound_targets(original, rewritten, target: str, before, after):
    """``target`` of the original and of the rewritten module, bound to the
    instances ``before`` and ``after`` when they are methods (raises
    ``AttributeError`` when a module lacks it)."""
    fn_before = resolve(original, target)
    fn_after = resolve(rewritten, target)
    if before is not None:
        fn_before = types.MethodType(fn_before, before)
        fn_after = types.MethodType(fn_after, after)
    return fn_before, fn_after

def load_factory(ref: str, root: str, original_path: str, original: types.ModuleType) -> Any:
    if "::" in ref:
        file, name = ref.split("::", 1)
        path = os.path.normpath(os.path.join(root, file))
        if os.path.normpath(path) == os.path.normpath(original_path):
            return resolve(original, name)
        return resolve(load_original(path), name)
    module_name, name = ref.split(":", 1)
    return resolve(importlib.import_module(module_name), name)


def call_factory(factory: Any, module: types.ModuleType) -> tuple[tuple, dict, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    made = factory(module=module) if "module" in params else factory()
    if isinstance(made, dict):
        return tuple(made.get("args", ())), dict(made.get("kwargs", {})), made.get("self")
    if isinstance(made, tuple):
        return made, {}, None
    return (made,), {}, None


def run_example(job: dict, spec: dict, backend, original, rewritten) -> dict:
    target = job["target"]
    result: dict = {"target": target, "device": backend.device_name()}
    if hasattr(backend, "run_example"):
        # the backend builds the models itself (torch_xla: both modules, one set of weights)
        try:
            factory = load_factory(job["factory"], spec["root"], spec["path"], original)
        except Exception as e:  # noqa: BLE001 - reported as the reason
            return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} cannot be "
                        f"loaded: {type(e).__name__}: {_first_line(e)}")
        return backend.run_example(job, spec, original, rewritten, factory, result)
    if job.get("modules"):
        # the rewrite changed how the model is built: the Flax NNX check builds both
        try:
            factory = load_factory(job["factory"], spec["root"], spec["path"], original)
            from .flax_backend import run_module_example
        except Exception as e:  # noqa: BLE001 - reported as the reason
            return dict(result, verdict="unverified", reason=f"{type(e).__name__}: {_first_line(e)}")
        return run_module_example(job, spec, backend, original, rewritten, factory, result)
    try:
        factory = load_factory(job["factory"], spec["root"], spec["path"], original)
        args, kwargs, instance = call_factory(factory, original)
    except Exception as e:  # noqa: BLE001 - reported as the reason
        return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} raised "
                    f"{type(e).__name__}: {e}")
    try:
        fn_before, fn_after = bound_targets(original, rewritten, target, instance, instance)
    except AttributeError as e:
        return dict(result, verdict="unverified", reason=f"cannot find `{target}`: {e}")
    # inputs in the rewritten layout (parameter lists stacked by the converter)
    args_after, kwargs_after, converted = backend.to_rewritten_layout(fn_before, args, kwargs,
                                                                       job.get("layout_params", []))
    tol = backend.tolerances(job.get("rtol") or spec.get("rtol"), job.get("atol") or spec.get("atol"))
    try:
        state0 = backend.state(instance)
        out_before = backend.call(fn_before, args, kwargs)
        state_before = backend.state(instance)
    except Exception as e:  # noqa: BLE001
        return dict(result, verdict="unverified", reason=f"the original `{target}` raised {type(e).__name__}: "
                    f"{_first_line(e)}")
    try:
        backend.restore(instance, state0)
        out_after = backend.call(fn_after, args_after, kwargs_after)
        state_after = backend.state(instance)
    except Exception as e:  # noqa: BLE001
        return dict(result, verdict="differs", reason="the rewritten code fails where the original runs",
                    differences=[diagnose(e, job)])
    differences: list[str] = []
    stats = backend.compare(out_before, out_after, tol, "output", differences)
    result["outputs"] = stats
    if instance is not None:
        backend.compare(state_before, state_after, tol, "state", differences)
    # gradients: VJP with a random cotangent, w.r.t. every float input and parameter
    try:
        grads = backend.gradients(fn_before, fn_after, args, kwargs, args_after, kwargs_after, converted)
    except Exception as e:  # noqa: BLE001
        grads = None
        result["gradients_note"] = f"gradients not compared ({type(e).__name__}: {_first_line(e)})"
    if grads is not None:
        g_before, g_after = grads
        if g_before is None:
            result["gradients_note"] = "no floating-point inputs to differentiate"
        else:
            result["gradients"] = backend.compare(g_before, g_after, tol.gradients(), "gradient", differences)
    # the dtypes the analysis had to assume: the same inputs in other floating dtypes
    for dtype in job.get("dtype_variants", []):
        result.setdefault("dtypes", {})[dtype] = _dtype_variant(
            backend, dtype, fn_before, fn_after, (args, kwargs), (args_after, kwargs_after), instance, state0,
            differences)
    # compile and steady-state run time, before and after, in this one process
    result["compile_s"], result["run_s"] = backend.timings(fn_before, fn_after, args, kwargs, args_after,
                                                           kwargs_after)
    # eager calls (outside jit): does every call compile the scan again?
    result["eager"] = backend.eager_calls(fn_before, fn_after, args, kwargs, args_after, kwargs_after)
    if differences:
        return dict(result, verdict="differs", differences=differences)
    return dict(result, verdict="verified")


def _dtype_variant(backend, dtype: str, fn_before, fn_after, before_inputs, after_inputs, instance, state0,
                   differences: list[str]) -> str:
    """Compare original and rewrite on the example's floating inputs cast to
    ``dtype`` (a carry whose dtype the code does not show keeps the inputs')."""
    args, kwargs = backend.cast_floats(before_inputs, dtype)
    args_after, kwargs_after = backend.cast_floats(after_inputs, dtype)
    try:
        backend.restore(instance, state0)
        out_before = backend.call(fn_before, args, kwargs)
    except Exception as e:  # noqa: BLE001
        return f"not compared: the original raises in {dtype} ({type(e).__name__})"
    try:
        backend.restore(instance, state0)
        out_after = backend.call(fn_after, args_after, kwargs_after)
    except Exception as e:  # noqa: BLE001
        differences.append(f"in {dtype}: the rewritten code raised {type(e).__name__}: {_first_line(e)}")
        return "differs"
    before = len(differences)
    backend.compare(out_before, out_after, backend.tolerances(None, None), f"output in {dtype}", differences)
    backend.restore(instance, state0)
    return "equal" if len(differences) == before else "differs"


_CARRY_ERROR = re.compile(r"input carry (component )?(?P<name>[\w\[\]\.']+) has type (?P<before>\S+) but the "
                          r"corresponding output carry component has type (?P<after>\S+?)[,.]")


def diagnose(error: BaseException, job: dict) -> str:
    """Turn the rewritten code's error into what differs and its likely cause."""
    text = str(error)
    m = _CARRY_ERROR.search(" ".join(text.split()))
    if m:
        raw = m.group("name")
        carries = [c for lp in job["loops"] for c in lp["carries"]]
        inits = {k: v for lp in job["loops"] for k, v in lp.get("carry_inits", {}).items()}
        name = raw
        idx = re.search(r"\[(\d+)\]", raw)
        if raw in carries:
            name = raw
        elif idx and carries:
            # `carry[i]`: the i-th carry of the (first) loop with several
            multi = next((lp["carries"] for lp in job["loops"] if len(lp["carries"]) > 1), carries)
            i = int(idx.group(1))
            name = multi[i] if i < len(multi) else raw
        before, after = m.group("before"), m.group("after")
        cause = ""
        init = inits.get(name)
        if init:
            shape = "a scalar" if before.endswith("[]") else f"{before}"
            cause = f": the initial value `{init['text']}` (line {init['line']}) is {shape}; initialise it " \
                    f"with the shape and dtype it has inside the loop"
        return f"carry `{name}`: {before} before, {after} after{cause}"
    return f"the rewritten code raised {type(error).__name__}: {_first_line(error)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(e).__name__


def load_backend(framework: str, device: str):
    """The backend of ``framework``, or the reason there is none."""
    if framework == "torch_xla":
        try:
            from .torch_xla_backend import TorchXlaBackend

            return TorchXlaBackend(device), None
        except ImportError as e:
            return None, f"torch_xla is not installed (`pip install loop2scan[torch-xla]`): {e}"
        except Exception as e:  # noqa: BLE001 - a runtime that does not start
            return None, f"torch_xla does not start: {type(e).__name__}: {_first_line(e)}"
    try:
        from .jax_backend import JaxBackend

        return JaxBackend(device), None
    except ImportError as e:
        return None, f"JAX is not installed (`pip install loop2scan[jax]`): {e}"


def main() -> int:
    spec = json.loads(sys.stdin.read())
    backend, error = load_backend(spec.get("framework", "jax"), spec.get("device", "default"))
    if backend is None:
        print(json.dumps({"error": error}))
        return 0
    try:
        original = load_original(spec["path"])
        rewritten = load_rewritten(original, spec["rewritten"])
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"could not import the module: {type(e).__name__}: {_first_line(e)}"}))
        return 0
    results = []
    for job in spec["examples"]:
        try:
            results.append(run_example(job, spec, backend, original, rewritten))
        except Exception as e:  # noqa: BLE001 - one example must not hide the others
            results.append({"target": job["target"], "verdict": "unverified",
                            "reason": f"internal error in the check: {type(e).__name__}: {_first_line(e)}",
                            "trace": traceback.format_exc(limit=3)})
    print(json.dumps({"examples": results}, default=float))
    return 0


def _exit_now(code: int) -> None:
    """End the process without finalising the interpreter: the result is
    written and flushed, and torch_xla's runtime threads can abort the
    interpreter's shutdown now and then ("terminate called without an active
    exception"), which would turn a finished check into a failed one."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
