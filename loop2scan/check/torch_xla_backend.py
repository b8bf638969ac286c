"""The PyTorch/XLA backend of ``--check`` (imported only by the worker process).

It compares a method of a torch module (or a plain function) before and after
the rewrite, whatever the rewritten loop was.  The example's factory returns
``{"self": module.Model(...), "args": (...), "kwargs": {...}}``; a factory
taking ``module`` is called once with the original module and once with the
rewritten one, with the same torch seed, and the rewritten model loads the
original's ``state_dict`` (``strict=True``: the rewrite keeps the parameter
layout), so both hold one set of weights; the tensors of the original's call
are given to both.  A factory without ``module`` builds one model, which both
versions of the method run on.

Both run on the XLA device (``torch_xla.device()``: the accelerator where
there is one, the CPU with ``PJRT_DEVICE=CPU``, which ``--device cpu`` sets)
in eval mode: dropout draws its masks differently under a scan, so train-mode
outputs cannot be compared.  Compared: the outputs, the gradients of one
random projection of them with respect to every floating-point input and
every parameter, and the buffers after the call; for a loop over a list of
layers (``scan_layers`` runs the first layer's Python code with every layer's
weights), every attribute of each layer that is neither a parameter nor a
buffer, through its submodules, against layer 0.  The forward and backward
pass is one XLA graph per version: its first call (trace, compile, run), the
XLA compile time in it, and the steady-state time of a call are measured.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import statistics
import time
import types
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.debug.metrics as metrics
import torch_xla.runtime as xr
from torch import nn

from .compare import Tolerances, aval, compare_arrays

SEED = 20261122
DEADLINE_S = 1.0  # steady state: at least 3 calls, more while this lasts (at most 20)


class TorchXlaBackend:
    def __init__(self, device: str = "default") -> None:
        # `--device cpu` reaches here as PJRT_DEVICE=CPU (set for the worker process)
        self.device = torch_xla.device()

    def device_name(self) -> str:
        return f"{self.device} ({xr.device_type()})"

    def tolerances(self, rtol, atol) -> Tolerances:
        return Tolerances(rtol, atol)

    # -- one example -------------------------------------------------------------
    def run_example(self, job: dict, spec: dict, original, rewritten, factory, result: dict) -> dict:
        from .worker import _first_line, bound_targets, call_factory, diagnose

        target = job["target"]
        result["mode"] = "eval"
        takes_module = _takes_module(factory)
        try:
            torch.manual_seed(SEED)
            args, kwargs, inst_before = call_factory(factory, original)
            if takes_module:
                torch.manual_seed(SEED)
                args_a, kwargs_a, inst_after = call_factory(factory, rewritten)
            else:
                args_a, kwargs_a, inst_after = args, kwargs, inst_before
        except Exception as e:  # noqa: BLE001 - reported as the reason
            return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} raised "
                        f"{type(e).__name__}: {_first_line(e)}")
        if "." in target and inst_before is None:
            return dict(result, verdict="unverified", reason=f"the example factory {job['factory']} returns no "
                        f"\"self\" for the method `{target}`")
        try:
            fn_before, fn_after = bound_targets(original, rewritten, target, inst_before, inst_after)
        except AttributeError as e:
            return dict(result, verdict="unverified", reason=f"cannot find `{target}`: {e}")
        # the tensors of the original's call for both; the rewritten side's own modules, with the same weights
        pairs: list[tuple[str, nn.Module, nn.Module]] = []
        if isinstance(inst_before, nn.Module) and isinstance(inst_after, nn.Module):
            pairs.append(("", inst_before, inst_after))
        args_a, kwargs_a = _merge((args, kwargs), (args_a, kwargs_a), "", pairs)
        args, kwargs = _to_device((args, kwargs), self.device)
        args_a, kwargs_a = _to_device((args_a, kwargs_a), self.device)
        mods_before = _modules_in((inst_before, args, kwargs))
        mods_after = _modules_in((inst_after, args_a, kwargs_a))
        for m in mods_before + mods_after:
            m.to(self.device).eval()
        if takes_module:
            for where, mb, ma in pairs:
                try:
                    ma.load_state_dict(mb.state_dict(), strict=True)
                except RuntimeError as e:
                    return dict(result, verdict="differs", differences=[
                        f"the rewritten model{f' `{where}`' if where else ''} does not take the original's "
                        f"state_dict: {_first_line(e)}"])
        torch_xla.sync()
        tol = self.tolerances(job.get("rtol") or spec.get("rtol"), job.get("atol") or spec.get("atol"))
        differences: list[str] = []
        # scan_layers runs layer 0's code with every layer's weights: the layers' other attributes must agree
        seen: set[str] = set()
        for lp in job["loops"]:
            attr = lp.get("torch_layers")
            if attr and attr not in seen and inst_after is not None:
                seen.add(attr)
                layers = getattr(inst_after, attr, None)
                if layers is not None:
                    differences += layer_attribute_differences(layers, attr)
        try:
            before = self._first_call(fn_before, args, kwargs, mods_before)
        except Exception as e:  # noqa: BLE001
            return dict(result, verdict="unverified", reason=f"the original `{target}` raised {type(e).__name__}: "
                        f"{_first_line(e)}")
        try:
            after = self._first_call(fn_after, args_a, kwargs_a, mods_after)
        except Exception as e:  # noqa: BLE001
            return dict(result, verdict="differs", reason="the rewritten code fails where the original runs",
                        differences=differences + [diagnose(e, job)])
        result["outputs"] = _compare_flat(before.outputs, after.outputs, tol, "output", differences)
        _compare_flat(before.buffers, after.buffers, tol, "buffer after the call", differences)
        if before.grads is None:
            result["gradients_note"] = "no floating-point output depends on an input or a parameter"
        else:
            result["gradients"] = dict(
                _compare_flat(before.grads, after.grads, tol.gradients(), "gradient", differences),
                parameters=before.n_params, inputs=before.n_inputs)
        result["first_call_s"] = {"before": before.first_call_s, "after": after.first_call_s}
        result["compile_s"] = {"before": before.compile_s, "after": after.compile_s}
        result["run_s"] = {"before": self._steady(fn_before, args, kwargs, mods_before),
                           "after": self._steady(fn_after, args_a, kwargs_a, mods_after)}
        if differences:
            return dict(result, verdict="differs", differences=differences)
        return dict(result, verdict="verified")

    # -- calls ---------------------------------------------------------------------
    def _call(self, fn, args, kwargs, modules):
        """One forward and backward pass (not yet run: XLA runs it at the next sync).
        Returns (outputs, [(name, tensor)] of the floating-point inputs and the
        parameters, their gradients or None)."""
        inputs: list[tuple[str, torch.Tensor]] = []

        def leaf(path: str, t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                t = t.detach().clone().requires_grad_(True)
                inputs.append((f"input {path}", t))
            return t

        a = tuple(_map_tensors(v, f"args[{i}]", leaf) for i, v in enumerate(args))
        k = {key: _map_tensors(v, key, leaf) for key, v in kwargs.items()}
        params = [(f"parameter {name}", p) for name, p in _named_parameters(modules) if p.requires_grad]
        torch.manual_seed(SEED)
        out = fn(*a, **k)
        flat = _flatten(out, "")
        diff = [(path, t) for path, t in flat if isinstance(t, torch.Tensor) and t.requires_grad
                and t.is_floating_point()]
        wrt = inputs + params
        if not diff or not wrt:
            return flat, wrt, None
        gen = torch.Generator().manual_seed(SEED)
        loss = sum((t * torch.randn(t.shape, generator=gen).to(t.dtype).to(t.device)).sum() for _, t in diff)
        grads = torch.autograd.grad(loss, [t for _, t in wrt], allow_unused=True)
        return flat, wrt, grads

    def _first_call(self, fn, args, kwargs, modules) -> "_Run":
        compiled = _compile_ns()
        t0 = time.perf_counter()
        flat, wrt, grads = self._call(fn, args, kwargs, modules)
        buffers = [(f"{name}", b) for name, b in _named_buffers(modules)]
        torch_xla.sync()  # one graph: outputs, gradients and buffers, before anything is read back
        xm.wait_device_ops()
        first = time.perf_counter() - t0
        run = _Run(outputs=_host(flat), buffers=_host(buffers), first_call_s=first,
                   compile_s=(_compile_ns() - compiled) / 1e9, n_inputs=sum(1 for n, _ in wrt if n.startswith("input")),
                   n_params=sum(1 for n, _ in wrt if n.startswith("parameter")))
        if grads is not None:
            run.grads = _host([(name, g) for (name, _), g in zip(wrt, grads)])
        return run

    def _steady(self, fn, args, kwargs, modules) -> Optional[float]:
        try:
            samples = []
            deadline = time.perf_counter() + DEADLINE_S
            for i in range(21):
                t0 = time.perf_counter()
                self._call(fn, args, kwargs, modules)
                torch_xla.sync()
                xm.wait_device_ops()
                if i:  # the first call after the first may still trace or compile once more
                    samples.append(time.perf_counter() - t0)
                if len(samples) >= 3 and time.perf_counter() > deadline:
                    break
            return statistics.median(samples)
        except Exception:  # noqa: BLE001 - timing is informative; the comparison stands
            return None


@dataclasses.dataclass
class _Run:
    outputs: list
    buffers: list
    first_call_s: float
    compile_s: float
    n_inputs: int
    n_params: int
    grads: Optional[list] = None


def _compile_ns() -> float:
    data = metrics.metric_data("CompileTime")
    return float(data[1]) if data else 0.0


def _takes_module(factory) -> bool:
    try:
        return "module" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


# -- values ---------------------------------------------------------------------------
def _flatten(x: Any, path: str) -> list[tuple[str, Any]]:
    """(path, leaf) of an output: tensors and Python values, through tuples,
    lists, mappings (model outputs) and dataclasses."""
    if isinstance(x, torch.Tensor):
        return [(path or "<root>", x)]
    if isinstance(x, (tuple, list)):
        out = [(f"{path}:{type(x).__name__}[{len(x)}]", None)] if not x else []
        for i, v in enumerate(x):
            out += _flatten(v, f"{path}[{i}]")
        return out
    if isinstance(x, Mapping):
        out = []
        for k, v in x.items():
            out += _flatten(v, f"{path}[{k!r}]")
        return out or [(f"{path}:{{}}", None)]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = []
        for f in dataclasses.fields(x):
            out += _flatten(getattr(x, f.name), f"{path}.{f.name}")
        return out
    return [(path or "<root>", x)]


def _map_tensors(x: Any, path: str, fn) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(path, x)
    if isinstance(x, tuple):
        return _tuple_like(x, [_map_tensors(v, f"{path}[{i}]", fn) for i, v in enumerate(x)])
    if isinstance(x, list):
        return [_map_tensors(v, f"{path}[{i}]", fn) for i, v in enumerate(x)]
    if isinstance(x, dict):
        return {k: _map_tensors(v, f"{path}[{k!r}]", fn) for k, v in x.items()}
    return x


def _to_device(x: Any, device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, tuple):
        return _tuple_like(x, [_to_device(v, device) for v in x])
    if isinstance(x, list):
        return [_to_device(v, device) for v in x]
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _merge(before: Any, after: Any, path: str, pairs: list) -> Any:
    """The rewritten side's inputs: the original's tensors, its own modules
    (paired with the original's, to share their weights), its other values."""
    if isinstance(before, nn.Module) and isinstance(after, nn.Module):
        if before is not after:
            pairs.append((path, before, after))
        return after
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        return before
    if isinstance(before, (tuple, list)) and type(before) is type(after) and len(before) == len(after):
        items = [_merge(b, a, f"{path}[{i}]", pairs) for i, (b, a) in enumerate(zip(before, after))]
        return _tuple_like(before, items) if isinstance(before, tuple) else items
    if isinstance(before, dict) and isinstance(after, dict) and before.keys() == after.keys():
        return {k: _merge(before[k], after[k], f"{path}[{k!r}]", pairs) for k in after}
    return after


def _tuple_like(x: tuple, items: list) -> tuple:
    return type(x)(*items) if hasattr(x, "_fields") else tuple(items)


def _modules_in(x: Any) -> list[nn.Module]:
    if isinstance(x, nn.Module):
        return [x]
    if isinstance(x, (tuple, list)):
        return [m for v in x for m in _modules_in(v)]
    if isinstance(x, dict):
        return [m for v in x.values() for m in _modules_in(v)]
    return []


def _named_parameters(modules: list[nn.Module]):
    seen: set[int] = set()
    for i, m in enumerate(modules):
        for name, p in m.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{i}:{name}" if len(modules) > 1 else name), p


def _named_buffers(modules: list[nn.Module]):
    for i, m in enumerate(modules):
        for name, b in m.named_buffers():
            yield (f"{i}:{name}" if len(modules) > 1 else name), b


def _host(flat: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Tensors brought to the host (after the sync: no graph is built), with
    the dtype they had; None and Python values as they are."""
    out = []
    for name, v in flat:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            dtype = str(t.dtype).replace("torch.", "")
            if t.dtype in (torch.bfloat16, torch.float16) or not _numpy_dtype(t.dtype):
                t = t.float() if t.is_floating_point() else t
            out.append((name, _HostArray(t.numpy(), dtype)))
        else:
            out.append((name, v))
    return out


def _numpy_dtype(dtype: torch.dtype) -> bool:
    return dtype not in (torch.bfloat16,) and not str(dtype).startswith("torch.float8")


@dataclasses.dataclass
class _HostArray:
    value: np.ndarray
    dtype: str  # as on the device


def _compare_flat(before: list, after: list, tol: Tolerances, what: str, differences: list[str]) -> dict:
    stats = {"max_abs": 0.0, "max_rel": 0.0}
    names_b = [n for n, _ in before]
    names_a = [n for n, _ in after]
    if names_b != names_a:
        differences.append(f"{what} structure: {_names(names_b)} before, {_names(names_a)} after")
        return stats
    for (path, x), (_, y) in zip(before, after):
        name = f"{what} {path}"
        if isinstance(x, _HostArray) and isinstance(y, _HostArray):
            if x.value.shape != y.value.shape or x.dtype != y.dtype:
                differences.append(f"{name}: {aval(x.value.shape, x.dtype)} before, "
                                   f"{aval(y.value.shape, y.dtype)} after")
                continue
            compare_arrays(name, x.value, y.value, tol, stats, differences, x.dtype)
        elif isinstance(x, _HostArray) or isinstance(y, _HostArray):
            differences.append(f"{name}: {_what(x)} before, {_what(y)} after")
        elif not _same(x, y):
            differences.append(f"{name}: {_short(x)} before, {_short(y)} after")
    return stats


def _names(names: list[str]) -> str:
    return "[" + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") + f"] ({len(names)})"


def _what(x: Any) -> str:
    if isinstance(x, _HostArray):
        return f"a tensor {aval(x.value.shape, x.dtype)}"
    return "no gradient" if x is None else _short(x)


def _same(x: Any, y: Any) -> bool:
    try:
        return bool(x == y) or (x != x and y != y)
    except Exception:  # noqa: BLE001 - values that do not compare: by type
        return type(x) is type(y)


def _short(x: Any, width: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= width else text[:width - 3] + "..."


# -- the layers of a scan_layers loop ----------------------------------------------------
_MODULE_INTERNALS: Optional[frozenset] = None
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _internals() -> frozenset:
    global _MODULE_INTERNALS
    if _MODULE_INTERNALS is None:
        _MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"training"}
    return _MODULE_INTERNALS


def layer_attributes(layer: nn.Module) -> dict[str, Any]:
    """What of one layer, besides its parameters and buffers, its Python code
    reads: each submodule's class, its plain attributes (ints, floats,
    strings, flags, tuples, tensors that are not buffers, functions...) and
    the number of its hooks; keyed ``attn.scale``, ``mlp.1`` (its class),
    ``attn.<forward hooks>``, ``<class>`` (the layer's own class)."""
    out: dict[str, Any] = {}
    internals = _internals()
    for prefix, m in layer.named_modules(remove_duplicate=False):
        out[prefix or "<class>"] = _Class(type(m))
        for key, value in vars(m).items():
            if key not in internals:
                out[f"{prefix}.{key}" if prefix else key] = value
        for hooks in _HOOKS:
            label = f"<{hooks.strip('_').replace('_', ' ')}>"
            out[f"{prefix}.{label}" if prefix else label] = len(getattr(m, hooks, None) or ())
    return out


@dataclasses.dataclass(frozen=True)
class _Class:
    cls: type

    def __repr__(self) -> str:
        return self.cls.__name__


_MISSING = object()


def layer_attribute_differences(layers: Any, attr: str) -> list[str]:
    """Every attribute in which a layer differs from layer 0, with the layers'
    values: ``scan_layers`` runs layer 0's Python code with every layer's
    parameters and buffers, so the others' attributes are never read."""
    try:
        layers = list(layers)
    except TypeError:
        return []
    if len(layers) < 2 or not all(isinstance(m, nn.Module) for m in layers):
        return []
    attrs = [layer_attributes(m) for m in layers]
    names = list(dict.fromkeys(n for a in attrs for n in a))
    values = {name: [a.get(name, _MISSING) for a in attrs] for name in names}
    differ = [name for name in names if not all(_equal(values[name][0], v) for v in values[name][1:])]
    # a submodule of another class: its own attributes are not compared on top
    other_class = [name for name in differ if any(isinstance(v, _Class) for v in values[name])]
    out = []
    for name in differ:
        if any(name.startswith(f"{c}.") or c == "<class>" and name != c for c in other_class):
            continue
        groups: list[tuple[Any, list[int]]] = []
        for i, v in enumerate(values[name]):
            for rep, idx in groups:
                if _equal(rep, v):
                    idx.append(i)
                    break
            else:
                groups.append((v, [i]))
        shown = ", ".join(f"{'missing' if v is _MISSING else _short(v, 40)} on {_layers(idx)}" for v, idx in groups)
        if name == "<class>":
            what = f"layer class `{attr}[i]`"
        elif name in other_class:
            what = f"layer class `{attr}[i].{name}`"
        else:
            what = f"layer attribute `{attr}[i].{name}`"
        out.append(f"{what}: {shown} (`scan_layers` runs layer 0's code with every layer's weights)")
    return out


def _layers(idx: list[int]) -> str:
    if len(idx) == 1:
        return f"layer {idx[0]}"
    runs, start = [], idx[0]
    for prev, cur in zip(idx, idx[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return "layers " + ", ".join(runs)


def _equal(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether two layers' values of an attribute are the same for their code:
    plain values by value (NaN equal to NaN), tensors by dtype, shape and
    contents, functions by their code and closure, modules that are not
    submodules by class and state, other objects by ``==`` where their class
    defines it, else (two levels deep) by their attributes."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        x, y = a.detach().cpu(), b.detach().cpu()
        return bool(torch.equal(x, y)) or (x.is_floating_point() and bool(torch.allclose(x, y, 0, 0, True)))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y, depth) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], depth) for k in a)
    if isinstance(a, nn.Module):
        return _equal(dict(a.state_dict()), dict(b.state_dict()), depth)
    if isinstance(a, types.FunctionType):
        return a.__code__ is b.__code__ and _equal(a.__defaults__, b.__defaults__, depth) and \
            _equal(a.__kwdefaults__, b.__kwdefaults__, depth) and (depth >= 2 or _equal(
                [c.cell_contents for c in a.__closure__ or ()], [c.cell_contents for c in b.__closure__ or ()],
                depth + 1))
    if isinstance(a, types.MethodType):  # a method of the layer itself: bound to each layer
        return _equal(a.__func__, b.__func__, depth)
    if isinstance(a, functools.partial):
        return _equal((a.func, a.args, a.keywords), (b.func, b.args, b.keywords), depth)
    if type(a).__eq__ is not object.__eq__:
        try:
            return bool(a == b)
        except Exception:  # noqa: BLE001 - an __eq__ that does not give a truth value
            pass
    if depth < 2 and hasattr(a, "__dict__") and not isinstance(a, (type, types.ModuleType)):
        return _equal(vars(a), vars(b), depth + 1)
    return False
