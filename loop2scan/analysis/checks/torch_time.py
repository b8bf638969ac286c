"""Time loops over tensors, for ``torch_xla``'s ``scan`` (``L2S335``, ``L2S336``).

A loop that steps through an axis of a tensor, carrying state from one step
to the next and stacking per-step outputs::

    outs = []
    for t in range(x.size(1)):
        h = self.cell(x[:, t], h)
        outs.append(h)
    y = torch.stack(outs, dim=1)

becomes ``torch_xla.experimental.scan.scan(step, init, xs)``.  The general
steps of the analysis (:data:`loop2scan.analysis.loop.PIPELINE`) find what is
iterated, the carries, the per-step inputs and outputs; this module adds what
PyTorch and torch_xla's scan require:

* calls are not assumed pure: the body, the project functions it calls and
  the submodules of ``self`` it calls (read through their class) change no
  state, read nothing back to the host and draw no random numbers
  (``L2S336``, or ``L2S331`` for the code of a submodule);
* a scan step cannot close over a tensor (its tracing fails): the
  submodules' parameters travel in the carry and are applied with
  ``torch.func.functional_call``; the tensors the body reads from outside
  travel in the carry too, unchanged; Python values (flags, sizes,
  ``self.training``) are closed over.  A submodule with buffers, a method of
  ``self`` or an attribute of ``self`` that may be a tensor keeps the loop
  (``L2S335``);
* what is scanned is shown to be a tensor (not a Python list of tensors,
  whose leaves the scan would step through one by one), the loop index is
  only used to index those tensors, and the carries are tensors from the
  start (``L2S335``: the scan traces its carry with gradients, so neither
  ``None`` nor a Python number can be a carry).
"""

from __future__ import annotations

import ast
from typing import Optional

from ...plan import TorchCell, TorchTimeScan
from ..activity import walk_all
from ..decline import Code, Decline, short
from ..examples import Invalid
from .torch_layers import (
    _CodeChecker,
    _Found,
    _python_chain,
    python_attribute,
    _submodule_build,
    _value_kind,
    check_layer_class,
    holds_buffers,
    may_be_none,
)

CODES = (
    Code("L2S335", "torch-time-loop", "the time loop is not in a form torch_xla's scan takes",
         "`scan` steps through tensors along their first axis, with tensors as its carry, and its step cannot "
         "close over a tensor: iterate a tensor (`x`, `x.unbind(1)`, `range(x.size(1))` with `x[:, t]`), start "
         "every carry from a tensor, and call only submodules of `self` built in `__init__` (their parameters "
         "are passed to the step), not its methods or its tensors."),
    Code("L2S336", "torch-step-effects", "the time loop's body changes state or calls code out of sight",
         "A scanned step must be a function of its inputs: in-place updates, attribute writes, values read "
         "back to the host, random numbers and calls whose source is not in the project (PyTorch calls are not "
         "assumed pure) keep the loop."),
)

SCANNED_AS = "torch_xla.experimental.scan.scan"


def check_time_loop(la) -> None:
    """The torch rules for the body of a time loop; records the submodules of
    ``self`` it calls (``la.torch_cells``)."""
    if la.func is None:
        return  # a loop at module level: the next step declines it
    cells = _cells(la)
    _check_self_reads(la, cells)
    here = _Found(la.mctx, la.func)
    checker = _CodeChecker(here, {}, "the loop body", 0, set(), code="L2S336")
    checker.check_statements(here, la.loop.body, "it")
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.AugAssign):
            target = short(ast.unparse(node.target))
            if not (isinstance(node.target, ast.Name) and node.target.id in checker.python_names(la.func)):
                raise Decline("L2S333", f"`{short(ast.unparse(node))}` updates `{target}` in place (in PyTorch `+=` "
                              f"on a tensor changes it, possibly the caller's); write `{target} = {target} "
                              f"{_op_text(node.op)} ...`", node)
    la.torch_cells = cells


def _cells(la) -> list[TorchCell]:
    """The submodules of ``self`` the body calls (``self.cell(x_t, h)``), each
    built once in ``__init__`` from a class whose code changes no state."""
    mctx, func = la.mctx, la.func
    calls: dict[str, list[ast.Call]] = {}
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            calls.setdefault(node.func.attr, []).append(node)
    if not calls:
        return []
    cls = mctx.enclosing_class(func) if func is not None else None
    if cls is None:
        raise Decline("L2S335", "the body calls a method of `self` outside a class", next(iter(calls.values()))[0])
    taken = set(la.fctx.all_names) | set(mctx.module_names)
    out = []
    for attr, nodes in calls.items():
        if any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == attr for s in cls.body):
            raise Decline("L2S335", f"the body calls the method `self.{attr}`: the scan step cannot close over the "
                          "module's tensors (only submodules built in `__init__` get their parameters passed in)",
                          nodes[0])
        found, build = _submodule_build(_Found(mctx, cls), attr)
        if found is None:
            raise Decline("L2S335", f"the body calls `self.{attr}`, and the analysis cannot see what it is (a "
                          "submodule built once in `__init__` from a known class)", nodes[0])
        name = found.node.name if isinstance(found, _Found) else found.rsplit(".", 1)[-1]
        check_layer_class(found, f"`self.{attr}` (`{name}`)", where=build, where_module=mctx)
        if holds_buffers(found):
            raise Decline("L2S335", f"`self.{attr}` (`{name}`) holds buffers: the step gets the submodule's tensors "
                          "through its carry, which torch_xla traces with gradients (an integer or boolean buffer "
                          "cannot ride there)", nodes[0])
        for node in nodes:
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise Decline("L2S335", f"`{short(ast.unparse(node))}` unpacks its arguments", node)
        param = f"{attr.strip('_') or 'module'}_params"
        while param in taken:
            param = "_" + param
        taken.add(param)
        out.append(TorchCell(attr, param, [mctx.span(n) for n in nodes]))
    return out


def _check_self_reads(la, cells: list[TorchCell]) -> None:
    """``self`` appears only in calls of its submodules and in Python values
    (``self.training``, ``self.config...``)."""
    mctx = la.mctx
    called = {c.attr for c in cells}
    for node in walk_all(la.loop.body):
        if not (isinstance(node, ast.Name) and node.id == "self"):
            continue
        parent = mctx.parent(node)
        if isinstance(parent, ast.Attribute) and parent.attr in called and \
                isinstance(mctx.parent(parent), ast.Call) and mctx.parent(parent).func is parent:
            continue
        top = node
        while isinstance(mctx.parent(top), ast.Attribute):
            top = mctx.parent(top)
        if top is not node and (_python_chain(top) or python_attribute(la, parent.attr)):
            continue
        what = short(ast.unparse(top))
        raise Decline("L2S335", f"the body reads `{what}`, which may be a tensor of the module: the scan step "
                      "cannot close over tensors (`self.training`, `self.config...`, attributes `__init__` sets from "
                      "literals or Python-valued parameters, and calls of submodules are known)", top)


def plan_time_scan(la) -> None:
    """After the general steps: the scanned inputs are tensors, the carries
    start as tensors, the outputs are stacked with ``torch.stack``, and the
    values the step reads from outside are tensors (carried) or Python values
    (closed over).  Records :class:`TorchTimeScan` on ``la``."""
    loop = la.loop
    la.context = None
    la.hoisted = None
    if la.counter is not None:
        raise Decline("L2S335", "the loop index is used as a value (not only to index tensors); torch_xla's scan "
                      "would need it as a tensor of the step numbers", loop)
    if not la.xs:
        raise Decline("L2S335", "nothing is scanned step by step: torch_xla's scan needs a tensor to step through",
                      loop)
    for item in la.xs:
        if item.kind == "arange":
            raise Decline("L2S335", "the loop index is used as a value (not only to index tensors); torch_xla's "
                          "scan would need it as a tensor of the step numbers", loop)
        source = _node_at(la, item.source) if item.kind in ("elements", "slice") else None
        if source is None or tensor_source(la, source) is None:
            raise Decline("L2S335", f"`{item.source_text}` is scanned, and nothing shows it is a tensor (annotate "
                          "it `torch.Tensor`, or compute it with a torch function): a Python list of tensors "
                          "would be stepped through leaf by leaf", source if source is not None else loop)
        if item.kind == "elements" and _is_unbind(la, source):
            found = unbind_axis(la, source)
            if found is None:
                raise Decline("L2S335", f"`{short(ast.unparse(source))}` is scanned: the scan steps through `x` "
                              "with the unbound dimension moved to the front, which needs the dimension as a "
                              "literal integer (`x.unbind(1)`)", source)
            base, axis = found
            item.source_text, item.axis = la.mctx.source(base), axis
        item.wrap_asarray = False  # a tensor (`x.unbind(k)` is scanned as `x` with axis k in front)
    for y in la.ys:
        y.wrap_asarray = False  # the step returns its values as they are (torch_xla's scan stacks tensors)
        if y.kind == "at_set":
            raise Decline("L2S335", f"`{y.name}` is written in place per step", loop)
        for c in y.consumers:
            if c.kind not in ("stack", "len", "index"):
                raise Decline("L2S335", f"`{y.name}` is used after the loop in a way the stacked tensor does not "
                              f"reproduce (`{c.kind}`); stack it with `torch.stack`", loop)
    for name in la.carries:
        for d in la.fctx.defs_before(loop, name):
            value = getattr(d.node, "value", None) if d.kind == "assign" else None
            if isinstance(value, ast.Constant):
                raise Decline("L2S335", f"the carry `{name}` starts as `{short(ast.unparse(value))}`, a Python "
                              "value: torch_xla's scan traces its carry as tensors with gradients; start it from a "
                              "floating-point tensor", d.node)
    carried, closed = [], []
    cell_names = {c.name for c in la.torch_cells}
    for name in la.broadcast_names():
        if name == "self" or name in cell_names:
            continue
        kind = _value_kind(la, name)
        if kind is None:
            node = next((n for n in walk_all(loop.body) if isinstance(n, ast.Name) and n.id == name), loop)
            raise Decline("L2S334", f"the body reads `{name}`, and nothing shows whether it is a tensor (the scan "
                          "step must get it through its carry) or a Python value (closed over)", node)
        (carried if kind == "tensor" else closed).append(name)
    for name in carried:
        if may_be_none(la, name):
            node = next((n for n in walk_all(loop.body) if isinstance(n, ast.Name) and n.id == name), loop)
            raise Decline("L2S335", f"the body reads `{name}`, which may be `None`: the step gets the tensors it "
                          "reads from outside through its carry, and torch_xla's scan carries tensors only", node)
    check_float_carries(la, la.carries, "is carried from step to step")
    check_float_carries(la, carried, "is read from outside the step and travels in its carry")
    la.torch_time = TorchTimeScan(cells=list(la.torch_cells), carried=carried, closed=closed)


#: ``torch`` tensor types and dtypes that are not floating point (a scan carry is traced with gradients).
_NON_FLOAT_TYPES = {"LongTensor", "IntTensor", "ShortTensor", "CharTensor", "ByteTensor", "BoolTensor"}
_NON_FLOAT_DTYPES = {"long", "int", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64",
                     "short", "bool"}
_NON_FLOAT_METHODS = {"long", "int", "short", "char", "byte", "bool"}
_INTEGER_FUNCTIONS = {"randint", "randint_like", "argmax", "argmin", "argsort", "nonzero", "searchsorted",
                      "bucketize", "randperm", "tril_indices", "triu_indices", "count_nonzero"}
_BOOL_FUNCTIONS = {"eq", "ne", "gt", "ge", "lt", "le", "isnan", "isinf", "isfinite", "isclose", "logical_and",
                   "logical_or", "logical_not", "logical_xor", "greater", "less", "equal", "isin", "signbit"}
_LIKE_FUNCTIONS = {"zeros_like", "ones_like", "full_like", "empty_like", "clone"}


def non_float(la, name: str, depth: int = 0) -> Optional[str]:
    """Why ``name`` is shown to hold a tensor that is not floating point (an
    integer or boolean dtype), from its definitions before the loop and its
    assignments in the body, or ``None``."""
    if depth > 4:
        return None
    fctx, mctx = la.fctx, la.mctx
    ann = fctx.param_annotations.get(name)
    if ann is not None:
        q = mctx.imports.qualname(ann) or ast.unparse(ann)
        if q.rsplit(".", 1)[-1] in _NON_FLOAT_TYPES:
            return f"annotated `{short(ast.unparse(ann))}`"
    values = []
    for d in fctx.defs_before(la.loop, name):
        if d.kind == "assign" and getattr(d.node, "value", None) is not None:
            values.append(d.node.value)
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            values.append(node.value)
    for value in values:
        why = _non_float_expr(la, value, depth)
        if why is not None:
            return f"`{name} = {short(ast.unparse(value))}` ({why})"
    return None


#: ``torch`` functions and tensor methods whose result has the dtype of their (first) tensor.
_SAME_DTYPE = {"tril", "triu", "flip", "transpose", "reshape", "view", "expand", "expand_as", "unsqueeze",
               "squeeze", "permute", "contiguous", "clone", "repeat", "narrow", "roll", "t", "movedim",
               "detach", "flatten", "broadcast_to", "diag", "diagonal", "to"}


def _non_float_expr(la, expr: ast.AST, depth: int) -> Optional[str]:
    if depth > 6:
        return None
    if isinstance(expr, ast.Compare):
        return "a comparison: boolean"
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.BitAnd, ast.BitOr, ast.BitXor)):
        return _non_float_expr(la, expr.left, depth + 1) or _non_float_expr(la, expr.right, depth + 1)
    if isinstance(expr, ast.Name):
        return "its value" if non_float(la, expr.id, depth + 1) else None
    if not isinstance(expr, ast.Call):
        return None
    for k in expr.keywords:
        if k.arg == "dtype" and _dtype_name(la, k.value) in _NON_FLOAT_DTYPES:
            return f"dtype {ast.unparse(k.value)}"
    f = expr.func
    if isinstance(f, ast.Attribute) and f.attr in _NON_FLOAT_METHODS and not expr.args:
        return f"`.{f.attr}()`"
    if isinstance(f, ast.Attribute) and f.attr in ("to", "type") and expr.args and \
            _dtype_name(la, expr.args[0]) in _NON_FLOAT_DTYPES:
        return f"converted to {ast.unparse(expr.args[0])}"
    q = la.mctx.imports.qualname(f)
    last = q.rsplit(".", 1)[-1] if q and q.startswith("torch.") else None
    if last in _INTEGER_FUNCTIONS:
        return f"`{q}` gives integers"
    if last in _BOOL_FUNCTIONS:
        return f"`{q}` gives booleans"
    if last == "arange" and not any(k.arg == "dtype" for k in expr.keywords) and not any(
            isinstance(a, ast.Constant) and isinstance(a.value, float) for a in expr.args):
        return "`torch.arange` of integers gives integers"
    if last in _LIKE_FUNCTIONS and expr.args and not any(k.arg == "dtype" for k in expr.keywords):
        return _non_float_expr(la, expr.args[0], depth + 1)
    if last in _SAME_DTYPE and expr.args:
        return _non_float_expr(la, expr.args[0], depth + 1)
    if isinstance(f, ast.Attribute) and f.attr in _SAME_DTYPE and q is None:
        return _non_float_expr(la, f.value, depth + 1)  # `.to(device)`: a dtype was handled above
    if isinstance(f, ast.Attribute) and f.attr in ("add", "mul", "sub", "clone") and q is None:
        return _non_float_expr(la, f.value, depth + 1)
    if last in ("add", "mul", "sub", "where", "clone") and expr.args:
        return _non_float_expr(la, expr.args[0], depth + 1)
    return None


#: ``torch`` factories: their tensors need no gradient unless asked (``requires_grad=True``).
_FACTORIES = {"zeros", "ones", "full", "empty", "eye", "arange", "linspace", "logspace", "tensor"}


def needs_no_gradient(la, name: str) -> bool:
    """``name`` holds a tensor that cannot need gradients where the loop starts:
    an integer or boolean one, or one built by a ``torch`` factory from Python
    values (through dtype-keeping functions such as ``triu``)."""
    if non_float(la, name) is not None:
        return True
    values = _values_before(la, name)
    return bool(values) and all(_factory_made(la, v, 0) for v in values)


def _values_before(la, name: str) -> list:
    out = []
    for d in la.fctx.defs_before(la.loop, name):
        value = getattr(d.node, "value", None) if d.kind == "assign" else None
        if value is None:
            return []  # a parameter, a loop variable...: not shown
        out.append(value)
    return out


def _factory_made(la, expr: ast.AST, depth: int) -> bool:
    if depth > 6 or not isinstance(expr, ast.Call):
        return False
    if any(k.arg == "requires_grad" for k in expr.keywords):
        return False
    f = expr.func
    q = la.mctx.imports.qualname(f)
    last = q.rsplit(".", 1)[-1] if q and q.startswith("torch.") else None
    if last == "full":
        return len(expr.args) >= 2 and _literal(expr.args[1])  # a tensor fill value could carry gradients
    if last in _FACTORIES:
        return True
    if last in _SAME_DTYPE and expr.args:
        return _factory_made(la, expr.args[0], depth + 1)
    if isinstance(f, ast.Attribute) and f.attr in _SAME_DTYPE and q is None:
        return _factory_made(la, f.value, depth + 1)
    return False


def _literal(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Constant) or (isinstance(expr, ast.UnaryOp) and isinstance(expr.operand, ast.Constant))


def _dtype_name(la, expr: ast.AST) -> Optional[str]:
    q = la.mctx.imports.qualname(expr)
    if q and q.startswith("torch."):
        return q.rsplit(".", 1)[-1]
    return None


def check_float_carries(la, names, what: str) -> None:
    """Every name the scan carries is not shown to be an integer or boolean
    tensor: torch_xla traces the carry with gradients, which such a tensor cannot
    have (the scan raises where the loop runs)."""
    for name in names:
        why = non_float(la, name)
        if why is not None:
            raise Decline("L2S335", f"`{name}` {what}, and it is not a floating-point tensor: {why}; torch_xla's "
                          "scan traces its carry with gradients, which an integer or boolean tensor cannot have",
                          la.loop)


def finish_plan(plan, assume_pure: bool = False) -> None:
    """What the explanation says of a torch time loop, and what it assumes."""
    scan = plan.torch_time
    plan.notes.append(scan.describe())
    if assume_pure:
        plan.notes.append("`--assume-pure` does not apply: the step function is defined on each call, and torch_xla's "
                          "`scan` keys its trace cache (`is_fn_pure=True`) by the function, so the flag would reuse "
                          "no trace and keep every call's alive")
    plan.assumptions = [f"`{name}` is a floating-point tensor (or a tuple of them): torch_xla's scan traces its "
                        "carry with gradients" for name in [*plan.carries, *scan.carried]]


def _node_at(la, span) -> Optional[ast.AST]:
    if span is None:
        return None
    for node in ast.walk(la.loop.iter if span.line <= la.loop.lineno else la.func):
        if hasattr(node, "lineno") and la.mctx.span(node) == span:
            return node
    return None


def tensor_source(la, node: ast.AST) -> Optional[ast.AST]:
    """The tensor ``node`` scans (``x`` for ``x``, ``x.unbind(1)``,
    ``torch.unbind(x, 1)``), when it is shown to be one."""
    if isinstance(node, ast.Call) and mctx_qual(la, node.func) == "torch.unbind":
        node = node.args[0] if node.args else None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "unbind":
        node = node.func.value
    if isinstance(node, ast.Name):
        return node if _value_kind(la, node.id) == "tensor" else None
    return None


def mctx_qual(la, func: ast.AST) -> Optional[str]:
    return la.mctx.imports.qualname(func)


def _op_text(op: ast.operator) -> str:
    from .torch_layers import _op

    return _op(op)


def _is_unbind(la, node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (mctx_qual(la, node.func) == "torch.unbind" or (
        isinstance(node.func, ast.Attribute) and node.func.attr == "unbind"))


def unbind_axis(la, node: ast.AST) -> Optional[tuple[ast.AST, int]]:
    """``(x, k)`` for ``x.unbind(k)`` / ``torch.unbind(x, k)`` (also ``dim=k``;
    ``k`` a literal integer, 0 when absent), else ``None``."""
    if not isinstance(node, ast.Call) or node.keywords and any(k.arg != "dim" for k in node.keywords):
        return None
    if mctx_qual(la, node.func) == "torch.unbind":
        if not 1 <= len(node.args) <= 2:
            return None
        base, rest = node.args[0], list(node.args[1:])
    elif isinstance(node.func, ast.Attribute) and node.func.attr == "unbind" and len(node.args) <= 1:
        base, rest = node.func.value, list(node.args)
    else:
        return None
    rest += [k.value for k in node.keywords]
    if not rest:
        return base, 0
    if len(rest) > 1:
        return None
    axis = rest[0]
    sign = 1
    if isinstance(axis, ast.UnaryOp) and isinstance(axis.op, ast.USub):
        axis, sign = axis.operand, -1
    if isinstance(axis, ast.Constant) and isinstance(axis.value, int) and not isinstance(axis.value, bool):
        return base, sign * axis.value
    return None


_RNN = """\
import torch
import torch.nn as nn
import torch_xla


class RNN(nn.Module):
    def __init__(self, d_in, d):
        super().__init__()
        self.cell = nn.GRUCell(d_in, d)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        outs = []
        for t in range(x.size(1)):
            {body}
        return torch.stack(outs, dim=1), h
"""

INVALID = (
    Invalid("L2S335", "method-of-self", _RNN.replace("        self.cell = nn.GRUCell(d_in, d)\n",
                                                     "        self.cell = nn.GRUCell(d_in, d)\n\n"
                                                     "    def step(self, x, h):\n"
                                                     "        return self.cell(x, h)\n").format(
        body="h = self.step(x[:, t], h)  # <-\n            outs.append(h)"),
        says=("`self.step`", "close over"), framework="torch_xla", header=False),
    Invalid("L2S335", "tensor-attribute-of-self", _RNN.format(
        body="h = self.cell(x[:, t], h) * self.scale  # <-\n            outs.append(h)"),
        says=("`self.scale`", "close over"), framework="torch_xla", header=False),
    Invalid("L2S335", "python-list-of-tensors", _RNN.replace("x: torch.Tensor", "x").format(
        body="h = self.cell(x[:, t], h)  # <-\n            outs.append(h)"),
        says=("`x`", "Python list"), framework="torch_xla", header=False),
    Invalid("L2S335", "integer-carry", """
        import torch
        import torch_xla


        def accumulate_hash(current_hash: torch.LongTensor, data: torch.LongTensor):
            for i in range(data.shape[-1]):  # <-
                current_hash = torch.add(current_hash, data[..., i]) * 6364136223846793005
            return current_hash
        """, says=("`current_hash`", "LongTensor", "gradients"), framework="torch_xla", header=False),
    Invalid("L2S335", "tensor-that-may-be-none", """
        from typing import Optional

        import torch
        import torch_xla


        def leaky(x: torch.Tensor, h: torch.Tensor, gain: Optional[torch.Tensor] = None):
            for x_t in x:
                h = torch.tanh(x_t + h) * gain  # <-
            return h
        """, says=("`gain`", "`None`"), framework="torch_xla", header=False),
    Invalid("L2S336", "helper-appends-to-a-list", """
        import torch
        import torch_xla

        LOG = []


        def record(h):
            LOG.append(h.shape)  # <-
            return h


        def leaky(x: torch.Tensor, h: torch.Tensor):
            for x_t in x:
                h = record(torch.tanh(x_t + h))
            return h
        """, says=("`LOG.append(h.shape)`", "outlives"), framework="torch_xla", header=False),
    Invalid("L2S336", "print-in-the-body", _RNN.format(
        body="h = self.cell(x[:, t], h)\n            print(h)  # <-\n            outs.append(h)"),
        says=("print",), framework="torch_xla", header=False),
    Invalid("L2S336", "random-numbers-in-the-body", _RNN.format(
        body="h = self.cell(x[:, t], h) + torch.randn_like(h)  # <-\n            outs.append(h)"),
        says=("random",), framework="torch_xla", header=False),
)
