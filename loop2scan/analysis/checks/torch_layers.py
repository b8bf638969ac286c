"""Loops over lists of PyTorch layers, for ``torch_xla``'s ``scan_layers`` (``L2S330``-``L2S334``).

A layer list is an attribute of a module built in its constructor, one layer
per step of ``range(n)``, from one class with the same arguments for every
layer::

    self.layers = nn.ModuleList([Block(d, heads) for _ in range(n_layers)])

and the loops of the class that call each layer in turn::

    for layer in self.layers:
        h = layer(h, mask, position_ids=pos)

``scan_layers(layers, carry)`` runs the *first* layer's Python code with every
layer's parameters and buffers, traced once with AOTAutograd.  That is the
loop only when

* every layer is built alike (so layer 0's Python attributes hold for all of
  them): one class, arguments that do not depend on the layer, nothing set on
  single layers afterwards (``L2S330``);
* the layer's ``forward``, and everything it calls that the project shows,
  changes no state: no in-place tensor update, no attribute or buffer write
  (BatchNorm's running statistics), nothing read back to the host; a layer
  whose code is out of sight is not assumed pure (``L2S331``; in JAX a call is
  assumed pure, in PyTorch it is not);
* the loop body only calls its layer and computes with what it gets
  (``L2S332``), updates nothing in place (``L2S333``), and every value it
  passes to each layer is shown to be either a tensor (or ``None``) or a
  Python value (``L2S334``): a scanned step cannot close over tensors, so
  tensors travel with the step as buffers, and Python values as attributes.

The list itself is not changed: ``scan_layers`` takes it (or the slice the
loop iterates) as it is, so checkpoints and every other use of the list stay
as they are.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from ...plan import LayerOutput, SharedValue, TorchLayerScan
from ..activity import all_read_names, all_written_names, target_names, walk_all
from ..decline import Code, Decline, short
from ..examples import Invalid
from ..imports import is_under
from ..nodes import walk
from ..outputs import growth_statement
from .module_stacks import _append_loop, _assignments, _init, _is_self_attr, _range_count

CODES = (
    Code("L2S330", "torch-layer-build", "the layer list is not built alike for every layer",
         "Build the list in `__init__` from one class with the same arguments for every layer "
         "(`nn.ModuleList([Block(d) for _ in range(n)])`): `scan_layers` runs the first layer's Python code with "
         "every layer's weights, so per-layer arguments (`layer_idx=i`, a window every other layer), other "
         "classes or attributes set on single layers would silently take the first layer's values."),
    Code("L2S331", "torch-layer-effects", "the layer's code changes state or is out of sight",
         "A scanned layer must be a function of its inputs and weights: in-place tensor updates, attribute or "
         "buffer writes (BatchNorm running statistics, caches, counters), values read back to the host and "
         "Python branches on tensor values would be lost or fail under `scan_layers`. PyTorch calls are not "
         "assumed pure: a layer class whose source is not in the project is not rewritten."),
    Code("L2S332", "torch-layer-step", "the loop does more with its layers than call each in turn",
         "The step of `scan_layers` gets one layer and the carry, and returns the carry: the loop body may "
         "call its layer, compute with tensors and grow tuples of carried tensors by one item per layer "
         "(`all_hidden_states += (h,)`, also under `if output_hidden_states:`); lists and other per-layer "
         "outputs, the layer index, other modules of `self`, other branches (a gradient-checkpointing branch) "
         "and values used after the loop keep it a loop."),
    Code("L2S333", "torch-in-place", "the loop body updates a tensor in place",
         "`h += x` and `x.add_(y)` change the tensor itself (possibly the caller's); write `h = h + x`."),
    Code("L2S334", "torch-shared-value", "a value passed to every layer is not shown to be a tensor or a Python value",
         "`scan_layers` cannot close over tensors: tensors (or `None`) passed to every layer travel with the "
         "step as buffers, Python values (flags, sizes, config) as attributes. Annotate the parameter "
         "(`mask: Optional[torch.Tensor]`, `use_cache: bool`) or give it a literal default."),
)

SCANNED_AS = "torch_xla.experimental.scan_layers.scan_layers"
#: loops that also collect per-layer outputs (`scan_layers` returns only the carry)
SCANNED_WITH_OUTPUTS = "torch_xla.experimental.scan.scan"

LIST_TYPES = ("torch.nn.ModuleList", "torch.nn.modules.container.ModuleList")
SEQUENTIAL_TYPES = ("torch.nn.Sequential", "torch.nn.modules.container.Sequential")
MODULE_BASES = ("torch.nn.Module", "torch.nn.modules.module.Module")

#: ``torch.nn`` layers whose ``forward`` changes no state (checked against their source).
PURE_TORCH_LAYERS = {
    "Linear", "Bilinear", "Identity", "LayerNorm", "RMSNorm", "GroupNorm", "Embedding", "ReLU", "ReLU6", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
    "Softmax", "LogSoftmax", "Softplus", "ELU", "SELU", "CELU", "LeakyReLU", "PReLU", "Hardtanh", "Hardswish",
    "Hardsigmoid", "GLU", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Flatten", "Unflatten", "MultiheadAttention", "RNNCell", "GRUCell", "LSTMCell",
}
#: ``torch.nn`` layers holding parameters (by default).
PARAMETER_TORCH_LAYERS = {"Linear", "Bilinear", "LayerNorm", "RMSNorm", "GroupNorm", "Embedding", "PReLU", "Conv1d",
                          "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                          "MultiheadAttention", "RNNCell", "GRUCell", "LSTMCell"}
#: ``torch.nn`` layers and functions that draw random numbers.  Under ``scan_layers`` (torch_xla 2.9) every
#: layer draws the same numbers: one dropout mask for all layers, where the loop draws one per layer.
RANDOM_TORCH_LAYERS = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
RANDOM_FUNCTIONS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                    "rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "bernoulli",
                    "multinomial", "normal", "poisson", "randperm", "rrelu"}
_INVERT_WHY = ("applies `~`: torch_xla 2.9's scan computes `~` on the boolean tensors it scans (buffers, values "
               "passed to every layer) as an integer bitwise not (`~True` becomes -2); write `.logical_not()`")
_RANDOM_STEP_WHY = ("draws random numbers: the scan traces the step once, where the loop draws new ones at every "
                    "step")
_RANDOM_WHY = ("draws random numbers, and under `scan_layers` every layer draws the same ones (one dropout mask "
               "for all layers, where the loop draws one per layer)")
#: ``torch.nn`` layers that write buffers in ``forward`` (running statistics in training).
STATEFUL_TORCH_LAYERS = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "InstanceNorm1d",
                         "InstanceNorm2d", "InstanceNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d",
                         "LazyBatchNorm3d"}

#: Builtins a layer may call (pure; their results are Python values or tensors).
PURE_BUILTINS = {"len", "isinstance", "min", "max", "abs", "int", "float", "bool", "tuple", "list", "dict", "range",
                 "zip", "enumerate", "getattr", "hasattr", "sum", "any", "all", "round", "divmod", "pow",
                 "reversed", "sorted", "map", "str", "super", "type", "slice", "callable", "set", "frozenset"}
#: Namespaces whose functions are pure (apart from the in-place spellings checked separately).
PURE_ROOTS = ("torch", "math", "einops", "operator", "functools", "typing", "numbers", "collections",
              "dataclasses")
#: ``torch`` functions with effects on the process or host.
TORCH_EFFECTS = ("torch.save", "torch.load", "torch.manual_seed", "torch.seed", "torch.set_", "torch.cuda",
                 "torch.distributed", "torch.utils.checkpoint", "torch._dynamo", "torch.compiler", "torch.jit",
                 "torch.autograd", "torch.backends", "torch.nn.init", "torch.random", "torch.testing")
#: Tensor methods that read values back to the host (or branch on them).
HOST_METHODS = {"item", "tolist", "numpy", "cpu", "nonzero", "data_ptr", "backward"}
#: Methods that change a Python container in place (not `add` and `sort`, which tensors have as pure methods).
CONTAINER_MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem",
                      "discard", "reverse", "__setitem__", "__delitem__"}
#: Tensor methods whose names end in ``_`` but change nothing.
NOT_IN_PLACE = {"requires_grad_"}


@dataclass
class _Found:
    """A class (or function) and the module that defines it."""

    mctx: object
    node: ast.AST


# ---------------------------------------------------------------------------- recognition

def layer_attribute(la) -> Optional[str]:
    """``X`` when the loop iterates ``self.X`` (or a slice of it, ``reversed``,
    ``enumerate`` or ``zip`` of it) in a method of a class: the loops this
    target hands to :func:`plan_layer_loop`."""
    from .module_stacks import stacked_iterable

    loop, func = la.loop, la.func
    if func is None or not isinstance(loop, ast.For):
        return None
    it = stacked_iterable(loop.iter)
    if it is None or la.mctx.enclosing_class(func) is None:
        return None
    return it.attr


def builds_modules(la) -> Optional[str]:
    """Why a loop in a constructor is not a candidate (it builds the modules,
    Python objects), or ``None``."""
    if la.func is not None and getattr(la.func, "name", None) == "__init__" and \
            la.mctx.enclosing_class(la.func) is not None:
        return "the loop is in a constructor: it builds modules (Python objects), it computes nothing to scan"
    return None


def _check_iterable(la, attr: str) -> tuple[str, ast.AST]:
    """The loop iterates the list (a slice of it, or ``reversed``) alone, or
    ``enumerate`` of it with a counter the body never reads: the layer's variable
    and the layers' expression."""
    loop = la.loop
    it = loop.iter
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "enumerate" and \
            len(it.args) == 1 and not it.keywords and "enumerate" not in la.fctx.shadowing and \
            isinstance(loop.target, ast.Tuple) and len(loop.target.elts) == 2 and \
            all(isinstance(e, ast.Name) for e in loop.target.elts):
        counter, element = loop.target.elts
        if counter.id not in all_read_names(loop.body) and counter.id != element.id:
            base = it.args[0]
            if isinstance(base, ast.Attribute) or (isinstance(base, ast.Subscript) and isinstance(
                    base.slice, ast.Slice) and isinstance(base.value, ast.Attribute)):
                return element.id, base  # the counter is never read: the layers alone
    base = it.args[0] if _is_reversed(it) else it
    if not (isinstance(base, ast.Attribute) or (isinstance(base, ast.Subscript) and isinstance(base.slice, ast.Slice)
                                                and isinstance(base.value, ast.Attribute))):
        raise Decline("L2S332", f"the loop iterates `{short(ast.unparse(it))}`: the step of `scan_layers` gets one "
                      "layer and no layer number or per-layer companion values (caches, names keyed by the index); "
                      f"iterate `self.{attr}` alone (an `enumerate` counter the body never reads is fine)", it)
    if not isinstance(loop.target, ast.Name):
        raise Decline("L2S332", f"the loop unpacks `{short(ast.unparse(loop.target))}` from each layer",
                      loop.target)
    return loop.target.id, it


def plan_layer_loop(la, attr: str) -> TorchLayerScan:
    """The facts of a loop over a list of torch layers, or a decline."""
    mctx, loop, func = la.mctx, la.loop, la.func
    cls = mctx.enclosing_class(func)
    element, layers = _check_iterable(la, attr)
    layer_cls = find_layers(la, cls, attr)
    check_layer_class(layer_cls, f"`{_class_name(layer_cls)}`", where=loop, where_module=mctx)
    if not holds_parameters(layer_cls):
        raise Decline("L2S330", f"`{_class_name(layer_cls)}` holds no parameter the analysis can see (an "
                      "`nn.Parameter`, a buffer, or a `torch.nn` layer with weights): `scan_layers` scans the "
                      "layers' parameters and fails when there are none", loop)
    uses = check_body(la, element, attr)
    return TorchLayerScan(attr=attr, element=element, element_uses=uses, cls=cls.name,
                          layer_class=_class_name(layer_cls), iterable=mctx.source(layers))


def all_blockers(la, attr: str, first: Decline) -> list[Decline]:
    """Every blocker of a declined loop over layers that the rules find when each
    runs on its own (the first is the loop's code): what is iterated, how the
    list is built, the layer's code, the body, what is collected or used after
    the loop, the values passed to every layer.  A loop held back by one rule
    alone is one fix away from a scan."""
    mctx, loop = la.mctx, la.loop
    cls = mctx.enclosing_class(la.func)
    found: list[Decline] = [first]

    def probe(rule):
        try:
            return rule()
        except Decline as d:
            found.append(d)
        except Exception:  # noqa: BLE001 - a rule that needs an earlier rule's facts says nothing here
            pass
        return None

    probe(lambda: _check_iterable(la, attr))
    layer_cls = probe(lambda: find_layers(la, cls, attr)) or _built_class(la, cls, attr)
    if layer_cls is not None:
        probe(lambda: check_layer_class(layer_cls, f"`{_class_name(layer_cls)}`", where=loop, where_module=mctx))
    element = _layer_variable(loop)
    if element is not None:
        result = probe(lambda: body_problems(la, element, attr))
        if result is not None:
            found.extend(result[1])
    if getattr(la, "accs", None):
        probe(lambda: check_collected(la))
        if getattr(la, "carries", None):
            probe(lambda: layer_outputs(la))
    if element is not None:
        scan = TorchLayerScan(attr=attr, element=element, element_uses=[], cls=cls.name if cls else "",
                              layer_class="", iterable=mctx.source(loop.iter))
        if not hasattr(la, "xs"):
            la.xs = []
        # a list the body grows is the accumulator rule's to judge (L2S501), not a value passed to every layer
        grown = _grown_lists(loop)
        probe(lambda: shared_values(la, scan, [n for n in la.broadcast_names() if n not in grown]))
    out: list[Decline] = []
    seen = set()
    for d in found:
        key = (d.code, getattr(d.node, "lineno", None), d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _grown_lists(loop: ast.AST) -> set[str]:
    """The names the loop's body grows in place (``outs.append(h)``, ``.extend``, ``.insert``)."""
    return {node.func.value.id for node in walk_all(loop.body)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("append", "extend", "insert") and isinstance(node.func.value, ast.Name)}


def check_collected(la) -> None:
    """What the loop collects per layer is a tuple growing by one item per
    layer (:func:`..outputs.growth_statement`): lists and stacked outputs decline."""
    for acc in la.accs.values():
        if acc.kind != "extend":
            raise Decline("L2S332", f"`{acc.name}` collects a value per layer in a list (or a tuple not grown by "
                          "`acc += (v,)`); `scan_layers` returns only the carry (a tuple grown by one carried tensor "
                          "per layer, `acc += (h,)`, is collected with `scan`)", acc.stmt)


def layer_outputs(la) -> list[LayerOutput]:
    """The tuples growing by one item per layer (``extend`` accumulators): the
    item is a carried tensor (a floating tensor in every step, so the scan can
    stack it), and the ``if`` around the growth, if any, tests Python values
    the loop does not change (the same answer for every layer, so it can be
    asked once after the loop)."""
    out = []
    for acc in sorted((a for a in la.accs.values() if a.kind == "extend"), key=lambda a: a.stmt.lineno):
        value = acc.value
        if not (isinstance(value, ast.Name) and value.id in la.carries):
            raise Decline("L2S332", f"`{acc.name}` collects `{short(ast.unparse(value))}` per layer, which is not "
                          "shown to be a tensor in every step (only a carried tensor is: a layer's other "
                          "outputs, such as attention weights, may be `None`)", value)
        if acc.guard is not None:
            _check_flag(la, acc.guard.test)
        top = acc.guard if acc.guard is not None else acc.stmt
        index = next(i for i, s in enumerate(la.loop.body) if s is top)
        out.append(LayerOutput(acc.name, index, isinstance(acc.stmt, ast.AugAssign), acc.guard is not None))
    return out


def _check_flag(la, test: ast.AST) -> None:
    """``test`` reads only Python values the loop does not change, through
    ``and``, ``or``, ``not`` and comparisons."""
    written = all_written_names(la.loop.body) | set(target_names(la.loop.target))
    why = None
    for node in walk(test):
        if isinstance(node, (ast.BoolOp, ast.UnaryOp, ast.Compare, ast.Constant, ast.Load, ast.boolop, ast.unaryop,
                             ast.cmpop)) and not isinstance(node, ast.Invert):
            continue
        if isinstance(node, ast.Name):
            if node.id in written:
                why = f"`{node.id}` changes in the loop"
            elif la.mctx.parent(node) is not None and isinstance(la.mctx.parent(node), ast.Attribute):
                continue  # the root of `self.config.flag`: checked with the chain
            elif _value_kind(la, node.id) != "python":
                why = f"nothing shows that `{node.id}` is a Python value"
        elif isinstance(node, ast.Attribute):
            if isinstance(la.mctx.parent(node), ast.Attribute):
                continue
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if not (isinstance(root, ast.Name) and root.id == "self"
                    and (_python_chain(node) or (isinstance(node.value, ast.Name) and python_attribute(la, node.attr)))):
                why = f"nothing shows that `{short(ast.unparse(node))}` is a Python value"
        else:
            why = f"`{short(ast.unparse(node))}` is more than a test of flags"
        if why is not None:
            raise Decline("L2S332", f"the body grows a tuple under `if {short(ast.unparse(test))}:`, and {why}: the "
                          "scan asks the test once, so it must give the same answer for every layer (a Python "
                          "flag such as `output_hidden_states: bool`)", test)


def is_direct_call(la, element: str) -> bool:
    """The body is one call of the layer on the carries, bound back to them in
    the same order (``h = layer(h)``, ``h, r = layer(h, r)``): ``scan_layers``
    can run the list's own layers."""
    body = la.loop.body
    if len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1:
        return False
    stmt = body[0]
    call = stmt.value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == element
            and not call.keywords and all(isinstance(a, ast.Name) for a in call.args)):
        return False
    target = stmt.targets[0]
    names = [target.id] if isinstance(target, ast.Name) else \
        [e.id for e in target.elts] if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name)
                                                                              for e in target.elts) else None
    if names is None or (isinstance(target, ast.Tuple) and len(names) < 2):
        return False
    return names == [a.id for a in call.args] == list(la.carries)


def _layer_variable(loop: ast.For) -> Optional[str]:
    """The name each layer is bound to (``layer`` in ``for layer in ...`` or
    ``for i, layer in enumerate(...)``)."""
    if isinstance(loop.target, ast.Name):
        return loop.target.id
    if isinstance(loop.target, ast.Tuple) and len(loop.target.elts) == 2 and \
            isinstance(loop.target.elts[1], ast.Name) and isinstance(loop.iter, ast.Call) and \
            isinstance(loop.iter.func, ast.Name) and loop.iter.func.id == "enumerate":
        return loop.target.elts[1].id
    return None


def _built_class(la, cls: Optional[ast.ClassDef], attr: str):
    """The class the list's comprehension builds, when the list is declined for
    how it is built (so the layer's code can still be read)."""
    if cls is None:
        return None
    builds = _assignments(cls, attr)
    if len(builds) != 1 or getattr(builds[0], "value", None) is None:
        return None
    for node in walk(builds[0].value):
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)) and isinstance(node.elt, ast.Call):
            return resolve_class(la.mctx, node.elt.func)
    return None


def _is_reversed(it: ast.AST) -> bool:
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "reversed" \
        and len(it.args) == 1 and not it.keywords


def _class_name(found) -> str:
    return found.node.name if isinstance(found, _Found) else found.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------- the list

def find_layers(la, cls: ast.ClassDef, attr: str):
    """The class of every layer of ``self.<attr>``: a :class:`_Found` for a
    class of the project, or the qualified name of a ``torch.nn`` layer."""
    mctx = la.mctx
    init = _init(cls)
    builds = _assignments(cls, attr)
    if init is None or not builds:
        raise Decline("L2S330", f"`self.{attr}` is not built in `{cls.name}.__init__` (it may come from a base class "
                      "or be set from outside); the rewrite needs to see that every layer is built alike", cls)
    if len(builds) > 1:
        raise Decline("L2S330", f"`self.{attr}` is assigned more than once in `{cls.name}` (line {builds[0].lineno} "
                      f"and line {builds[1].lineno})", builds[1])
    build = builds[0]
    if not isinstance(build, (ast.Assign, ast.AnnAssign)) or build not in init.body or \
            (isinstance(build, ast.Assign) and len(build.targets) != 1) or build.value is None:
        raise Decline("L2S330", f"`self.{attr}` is built by `{short(ast.unparse(build))}`, not by a plain "
                      "assignment in the body of `__init__`", build)
    value = build.value
    q = mctx.imports.qualname(value.func) if isinstance(value, ast.Call) else None
    if q in LIST_TYPES:
        if len(value.args) > 1 or value.keywords:
            raise Decline("L2S330", f"`{short(ast.unparse(value))}` is not a list of layers built in place", value)
        value = value.args[0] if value.args else ast.List(elts=[], ctx=ast.Load())
    elif q in SEQUENTIAL_TYPES:
        if len(value.args) != 1 or not isinstance(value.args[0], ast.Starred) or value.keywords:
            raise Decline("L2S330", f"`{short(ast.unparse(value))}` does not build its layers in place "
                          "(`nn.Sequential(*[Block(d) for _ in range(n)])`)", value)
        value = value.args[0].value
    if isinstance(value, (ast.ListComp, ast.GeneratorExp)):
        gen = value.generators
        if len(gen) != 1 or gen[0].ifs or gen[0].is_async or not isinstance(gen[0].target, ast.Name):
            raise Decline("L2S330", f"`{short(ast.unparse(value))}` is not one layer per step of `range(n)`", value)
        index, count, element, where = gen[0].target.id, _range_count(gen[0].iter), value.elt, gen[0].iter
    elif isinstance(value, ast.List) and not value.elts:
        try:
            append_loop, index, count, element = _append_loop(init, build, attr)
        except Decline as d:  # the NNX rule's finding, under this target's code
            raise Decline("L2S330", d.message, d.node) from None
        where = append_loop.iter
        if len(append_loop.body) != 1:
            raise Decline("L2S330", "the loop filling the list does more than append one layer", append_loop)
    else:
        raise Decline("L2S330", f"`self.{attr}` is built by `{short(ast.unparse(build.value))}`; the rewrite needs "
                      "one layer per step of `range(n)` (a comprehension or an `append` loop) to see that every "
                      "layer is built alike", build)
    if count is None:
        raise Decline("L2S330", f"the layers are built over `{short(ast.unparse(where))}`, not `range(n)`", where)
    found = _check_element(mctx, element, index)
    _check_set_afterwards(la, cls, attr, build)
    return found


def _check_element(mctx, element: ast.AST, index: str):
    if not isinstance(element, ast.Call):
        raise Decline("L2S330", f"each layer is `{short(ast.unparse(element))}`, not a call of a layer class",
                      element)
    for arg in [*element.args, *[k.value for k in element.keywords]]:
        for node in walk(arg):
            if isinstance(node, ast.Name) and node.id == index:
                raise Decline("L2S330", f"the argument `{short(ast.unparse(arg))}` depends on the layer index "
                              f"`{index}`: the layers differ, and `scan_layers` would run the first layer's code "
                              "(its Python attributes) for all of them", arg)
            if isinstance(node, (ast.Call, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                                 ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
                raise Decline("L2S330", f"the argument `{short(ast.unparse(arg))}` is computed anew for each layer; "
                              "compute it once before the list and pass the value", node)
        if isinstance(arg, ast.Starred):
            raise Decline("L2S330", f"`{short(ast.unparse(element))}` unpacks its arguments", element)
    found = resolve_class(mctx, element.func)
    if found is None:
        raise Decline("L2S330", f"`{short(ast.unparse(element.func))}` is not shown to be a layer class (a class of "
                      "the project deriving from `nn.Module`, or a layer of `torch.nn`)", element.func)
    return found


def _check_set_afterwards(la, cls: ast.ClassDef, attr: str, build: ast.stmt) -> None:
    """No single layer is changed after the list is built: no item or attribute
    of ``self.<attr>`` assigned, no loop over it setting attributes of its layers."""
    for node in walk(cls):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                for leaf in walk(t):
                    if isinstance(leaf, (ast.Attribute, ast.Subscript)):
                        base = leaf
                        while isinstance(base, (ast.Attribute, ast.Subscript)) and not _is_self_attr(base, attr):
                            base = base.value
                        if _is_self_attr(base, attr) and base is not t and node is not build:
                            raise Decline("L2S330", f"`{short(ast.unparse(t))}` (line {node.lineno}) changes part of "
                                          f"`self.{attr}` after it is built: `scan_layers` would run the first "
                                          "layer's code for every layer", node)
        if isinstance(node, ast.For) and node is not la.loop:
            from .module_stacks import stacked_iterable

            it = stacked_iterable(node.iter)
            if it is not None and it.attr == attr:
                names = set(target_names(node.target))
                for inner in walk_all(node.body):
                    f = inner.func if isinstance(inner, ast.Call) else None
                    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in names \
                            and f.attr not in _LAYER_METHODS_KEEPING_ATTRIBUTES:
                        raise Decline("L2S330", f"`{short(ast.unparse(inner))}` (line {inner.lineno}) is called on "
                                      f"each layer of `self.{attr}` in turn and may set values that differ between "
                                      "layers; `scan_layers` would use the first layer's", inner)
                    if isinstance(inner, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                        for t in (inner.targets if isinstance(inner, ast.Assign) else [inner.target]):
                            root = t
                            while isinstance(root, (ast.Attribute, ast.Subscript)):
                                root = root.value
                            if isinstance(root, ast.Name) and root.id in names and root is not t:
                                raise Decline("L2S330", f"`{short(ast.unparse(t))}` (line {inner.lineno}) sets a "
                                              f"value on each layer of `self.{attr}` in turn; the layers may differ "
                                              "and `scan_layers` would use the first layer's", inner)
                    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and \
                            inner.func.id == "setattr":
                        raise Decline("L2S330", f"`setattr` on the layers of `self.{attr}` (line {inner.lineno})",
                                      inner)


#: Methods of a layer that change no Python attribute (its weights are scanned from every layer).
_LAYER_METHODS_KEEPING_ATTRIBUTES = {
    "reset_parameters", "parameters", "named_parameters", "buffers", "named_buffers", "modules", "named_modules",
    "children", "named_children", "state_dict", "to", "float", "half", "double", "bfloat16", "cuda", "cpu",
    "requires_grad_", "zero_grad", "forward",
}


def resolve_class(mctx, func: ast.AST):
    """The class a constructor call names: a :class:`_Found` in this module or
    another module of the project, the qualified name of a ``torch.nn`` class,
    or ``None``."""
    q = mctx.imports.qualname(func)
    if q is not None and is_under(q, "torch.nn") and q.rsplit(".", 1)[-1][:1].isupper():
        return q
    if isinstance(func, ast.Name):
        local = mctx.module_classes.get(func.id)
        if local is not None:
            return _Found(mctx, local)
    project = mctx.project
    if q is not None and project is not None:
        found = project.split(q)
        if found is not None and "." not in found[1]:
            other = project.module_context(found[0])
            if other is not None and found[1] in other.module_classes:
                return _Found(other, other.module_classes[found[1]])
    return None


# ---------------------------------------------------------------------------- layer code

def check_layer_class(found, what: str, depth: int = 0, seen: Optional[set] = None, where=None,
                      where_module=None) -> None:
    """The layer's ``forward`` and everything it calls change no state.
    ``where`` (in ``where_module``): the call building the layer, for messages."""
    seen = set() if seen is None else seen

    def fail(message: str):
        d = Decline("L2S331", message, where)
        d.module = where_module
        raise d

    if isinstance(found, str):
        last = found.rsplit(".", 1)[-1]
        if last in RANDOM_TORCH_LAYERS:
            fail(f"{what} holds a `{last}`, which {_RANDOM_WHY}")
        if last in STATEFUL_TORCH_LAYERS:
            fail(f"{what} holds a `{last}`, which updates its running statistics (buffers) in training: under "
                 "`scan_layers` the updates would land on stacked copies and be lost")
        if last in ("ModuleList", "ModuleDict", "Sequential", "ParameterList", "ParameterDict"):
            fail(f"{what} holds a `{last}` whose layers the analysis does not follow")
        if last not in PURE_TORCH_LAYERS:
            fail(f"{what} uses `{found}`, a `torch.nn` layer not known to leave its state unchanged in `forward`")
        return
    key = (id(found.mctx), found.node.name)
    if key in seen or depth > 6:
        return
    seen.add(key)
    mctx, cls = found.mctx, found.node
    bases = _project_bases(mctx, cls)
    if bases is None:
        raise Decline("L2S331", f"{what}: the class `{cls.name}` derives from a class whose code is not in the "
                      "project; PyTorch calls are not assumed pure", None)
    classes = [found, *bases]
    methods = {}
    for c in reversed(classes):
        for stmt in c.node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                methods[stmt.name] = _Found(c.mctx, stmt)
    if "forward" not in methods:
        raise Decline("L2S331", f"{what}: `{cls.name}` has no `forward` in the project", None)
    for c in classes:
        init = _init(c.node)
        if init is not None:
            _check_init(c, init, what)
    checker = _CodeChecker(found, methods, what, depth, seen)
    checker.check_function(methods["forward"])


def holds_parameters(found, depth: int = 0) -> bool:
    """The layer class holds parameters or buffers: an ``nn.Parameter``, a
    ``register_buffer``, or a submodule of a class that does."""
    return _holds(found, ("torch.nn.Parameter", "torch.nn.parameter.Parameter"),
                  ("register_buffer", "register_parameter"), PARAMETER_TORCH_LAYERS, depth)


def holds_buffers(found, depth: int = 0) -> bool:
    """The class registers buffers (itself or in a submodule)."""
    return _holds(found, (), ("register_buffer",), STATEFUL_TORCH_LAYERS, depth)


def _holds(found, constructors: tuple, methods: tuple, torch_layers: set, depth: int) -> bool:
    if isinstance(found, str):
        return found.rsplit(".", 1)[-1] in torch_layers
    if depth > 6:
        return False
    classes = [found, *(_project_bases(found.mctx, found.node) or [])]
    for c in classes:
        for node in walk(c.node):
            if isinstance(node, ast.Call):
                q = c.mctx.imports.qualname(node.func)
                if q in constructors or (isinstance(node.func, ast.Attribute) and node.func.attr in methods):
                    return True
                sub = resolve_class(c.mctx, node.func)
                if sub is not None and not (isinstance(sub, _Found) and sub.node is c.node) and \
                        _holds(sub, constructors, methods, torch_layers, depth + 1):
                    return True
    return False


def _project_bases(mctx, cls: ast.ClassDef, depth: int = 0) -> Optional[list]:
    """The project classes ``cls`` derives from (up to ``nn.Module``), or ``None``
    when a base is out of sight."""
    out = []
    for base in cls.bases:
        q = mctx.imports.qualname(base)
        if q in MODULE_BASES:
            continue
        found = resolve_class(mctx, base)
        if not isinstance(found, _Found) or depth > 6:
            return None
        out.append(found)
        more = _project_bases(found.mctx, found.node, depth + 1)
        if more is None:
            return None
        out.extend(more)
    if not cls.bases:
        return None
    return out


def _check_init(found: _Found, init: ast.FunctionDef, what: str) -> None:
    """The constructor keeps no count of its calls (a class attribute or a
    global changed per layer would make the layers differ)."""
    for node in walk(init):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            raise Decline("L2S330", f"{what}: `{found.node.name}.__init__` changes `{', '.join(node.names)}` "
                          "(global): the layers may differ", node)
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                root = t
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(t, ast.Attribute) and (
                        (isinstance(root, ast.Name) and root.id in (found.node.name, "cls"))
                        or (isinstance(t.value, ast.Call) and isinstance(t.value.func, ast.Name)
                            and t.value.func.id == "type")
                        or (isinstance(t.value, ast.Attribute) and t.value.attr == "__class__")):
                    raise Decline("L2S330", f"{what}: `{found.node.name}.__init__` sets the class attribute "
                                  f"`{short(ast.unparse(t))}`: the layers may differ", node)


class _CodeChecker:
    """Walks a layer's ``forward``, the methods and functions it calls and the
    submodules it calls, declining on the first state change."""

    def __init__(self, owner: _Found, methods: dict, what: str, depth: int, seen: set,
                 code: str = "L2S331") -> None:
        self.owner = owner
        self.methods = methods
        self.what = what
        self.depth = depth
        self.seen = seen
        self.code = code
        self.done: set[int] = set()
        time = code != "L2S331"  # the body of a time loop (torch_xla's scan), not a layer's code
        self.branch_why = ("the step is traced once, so the branch taken then would hold for every step" if time
                           else "the first layer's branch would be traced for every layer")
        self.random_why = _RANDOM_STEP_WHY if time else _RANDOM_WHY
        self._python: dict[int, set[str]] = {}

    def fail(self, message: str, node, mctx) -> None:
        d = Decline(self.code, f"{self.what}: {message}", node)
        d.module = mctx
        raise d

    def python_names(self, func: ast.AST) -> set[str]:
        """Names of ``func`` bound only to Python numbers."""
        if id(func) not in self._python:
            self._python[id(func)] = _python_locals(func)
        return self._python[id(func)]

    def check_function(self, fn: _Found, is_method: bool = True) -> None:
        if id(fn.node) in self.done:
            return
        self.done.add(id(fn.node))
        func = fn.node
        self.check_statements(fn, func.body, f"`{getattr(func, 'name', 'the function')}` (line {func.lineno})",
                              is_method)

    def check_statements(self, fn: _Found, body: list, where: str = "the loop body", is_method: bool = False) -> None:
        """``body``, statements of the function ``fn`` (calls of ``self.<name>`` are
        followed only for a method)."""
        mctx, func = fn.mctx, fn.node
        python_names = self.python_names(func)
        for node in walk_all(body):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                self.fail(f"{where} changes the global `{node.names[0]}`", node, mctx)
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for t in targets:
                    for leaf in _target_leaves(t):
                        if isinstance(leaf, ast.Attribute):
                            self.fail(f"{where} sets `{short(ast.unparse(leaf))}`: a write to an attribute or "
                                      "buffer would land on a stacked copy and be lost", node, mctx)
                        if isinstance(leaf, ast.Subscript):
                            self.fail(f"{where} assigns `{short(ast.unparse(leaf))}` in place", node, mctx)
                if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and \
                        node.target.id not in python_names:
                    self.fail(f"{where} updates `{node.target.id}` in place "
                              f"(`{short(ast.unparse(node))}`): write `{node.target.id} = "
                              f"{node.target.id} {_op(node.op)} ...`", node, mctx)
            if isinstance(node, ast.Call):
                self.check_call(fn, node, is_method)
            if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
                self.check_test(fn, node.test)
            if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
                self.fail(f"{where} is a generator or coroutine", node, mctx)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
                self.fail(f"`{short(ast.unparse(node))}` (line {node.lineno}) {_INVERT_WHY}", node, mctx)

    def check_test(self, fn: _Found, test: ast.AST) -> None:
        for node in walk(test):
            if isinstance(node, ast.Call):
                f = node.func
                q = fn.mctx.imports.qualname(f)
                if (isinstance(f, ast.Attribute) and f.attr in ("any", "all", "item", "equal", "allclose", "sum",
                                                                  "max", "min", "mean", "isnan", "isinf")) or \
                        (q is not None and is_under(q, "torch") and not q.rsplit(".", 1)[-1].startswith("is_")):
                    self.fail(f"`{short(ast.unparse(test))}` (line {test.lineno}) branches on tensor values: "
                              + self.branch_why, test, fn.mctx)

    def check_call(self, fn: _Found, call: ast.Call, is_method: bool) -> None:
        mctx = fn.mctx
        f = call.func
        if any(k.arg == "out" for k in call.keywords):
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) writes into `out=`", call, mctx)
        if isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.endswith("__") \
                and f.attr not in NOT_IN_PLACE:
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) updates a tensor in place", call, mctx)
        if isinstance(f, ast.Attribute) and f.attr in HOST_METHODS:
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) reads a tensor back to the host", call, mctx)
        if isinstance(f, ast.Attribute) and f.attr in ("register_buffer", "register_parameter", "apply",
                                                       "register_forward_hook", "register_forward_pre_hook"):
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) changes the module", call, mctx)
        if isinstance(f, ast.Attribute) and f.attr in CONTAINER_MUTATORS and mctx.imports.qualname(f) is None \
                and not self._local_container(fn, f.value):
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) changes a container that outlives the "
                      "call; under a scan the change would happen once, when the step is traced", call, mctx)
        if isinstance(f, ast.Name) and f.id in ("float", "int", "bool", "complex") and q_is_builtin(mctx, f) \
                and call.args and not _python_value(call.args[0], self.python_names(fn.node)):
            self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) reads a value back to the host",
                      call, mctx)
        # calls of `self.<name>`: a method (checked too) or a submodule (its class checked)
        if is_method and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
            if f.attr in self.methods:
                self.check_function(self.methods[f.attr])
                return
            sub, built = self._submodule(f.attr)
            if sub is None:
                self.fail(f"`self.{f.attr}` (line {call.lineno}) is called, and the analysis cannot see what it is "
                          "(a submodule built in `__init__` from a known class)", call, mctx)
            for part in _sequential_parts(self.owner.mctx, sub, built) or [sub]:
                check_layer_class(part, self.what, self.depth + 1, self.seen, where=built,
                                  where_module=self.owner.mctx)
            return
        q = mctx.imports.qualname(f)
        if isinstance(f, ast.Name) and q is None:
            if f.id in PURE_BUILTINS:
                return
            local = mctx.module_functions.get(f.id)
            if local is not None:
                self.check_function(_Found(mctx, local), is_method=False)
                return
            if f.id in mctx.module_classes:
                return  # building a value of a class of the module (a dataclass, a named tuple)
            if f.id in ("print", "input", "open", "breakpoint"):
                self.fail(f"`{f.id}(...)` (line {call.lineno}) has a host effect", call, mctx)
            return  # a local function or a callable argument: its calls are checked where it is defined
        if q is not None:
            if any(q == e or q.startswith(e + ".") or (e.endswith("_") and q.startswith(e)) for e in TORCH_EFFECTS):
                self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) calls `{q}`", call, mctx)
            if is_under(q, "torch") and q.rsplit(".", 1)[-1] in RANDOM_FUNCTIONS:
                self.fail(f"`{short(ast.unparse(call))}` (line {call.lineno}) {self.random_why}", call, mctx)
            if is_under(q, *PURE_ROOTS) or q.startswith("builtins."):
                return
            project = mctx.project
            if project is not None:
                found = project.function(q)
                if found is not None:
                    self.check_function(_Found(found[1], found[0]), is_method=False)
                    return
            self.fail(f"`{short(ast.unparse(f))}` (line {call.lineno}) is out of sight (`{q}`); PyTorch code is not "
                      "assumed pure", call, mctx)
        # method calls on values (`x.view(...)`, `self.lin.weight.t()`): tensor methods, checked above

    def _submodule(self, attr: str):
        return _submodule_build(self.owner, attr)

    def _local_container(self, fn: _Found, receiver: ast.AST) -> bool:
        """``receiver`` is a name the function itself binds (not a parameter, a
        global or an attribute): a container made for this call."""
        func = fn.node
        if not isinstance(receiver, ast.Name) or not hasattr(func, "args"):
            return False
        params = {a.arg for a in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]}
        if func.args.vararg is not None:
            params.add(func.args.vararg.arg)
        if func.args.kwarg is not None:
            params.add(func.args.kwarg.arg)
        if receiver.id in params:
            return False
        return any(isinstance(n, ast.Name) and n.id == receiver.id and isinstance(n.ctx, ast.Store)
                   for n in walk_all(func.body))


def _submodule_build(owner: _Found, attr: str):
    """The class of ``self.<attr>`` when the class ``owner`` assigns it once from
    a class, and the assignment (``(None, None)`` otherwise)."""
    builds = _assignments(owner.node, attr)
    if len(builds) != 1 or not isinstance(builds[0], ast.Assign) or not isinstance(builds[0].value, ast.Call):
        return None, None
    return resolve_class(owner.mctx, builds[0].value.func), builds[0]


def _sequential_parts(mctx, sub, built) -> Optional[list]:
    """The classes of the layers of ``nn.Sequential(A(...), B(...), ...)`` built
    in place (``built``), each resolved (:func:`resolve_class`), or ``None``
    when ``sub`` is not such a ``Sequential`` (then it is checked as it is)."""
    if not (isinstance(sub, str) and sub.rsplit(".", 1)[-1] == "Sequential" and built is not None):
        return None
    call = built.value
    if call.keywords or not call.args or not all(isinstance(a, ast.Call) for a in call.args):
        return None
    parts = [resolve_class(mctx, a.func) for a in call.args]
    return parts if all(p is not None for p in parts) else None


def _target_leaves(t: ast.AST) -> list:
    if isinstance(t, (ast.Tuple, ast.List)):
        return [leaf for e in t.elts for leaf in _target_leaves(e)]
    if isinstance(t, ast.Starred):
        return _target_leaves(t.value)
    return [t]


def _python_locals(func: ast.AST) -> set[str]:
    """Names of ``func`` bound only to Python numbers (literal ints and floats,
    ``len(...)``, arithmetic on such): ``n += 1`` on them changes no tensor."""
    values: dict[str, list] = {}
    for node in walk_all(func.body):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                for name in target_names(t):
                    values.setdefault(name, []).append(node.value if isinstance(t, ast.Name) else None)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            values.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.For, ast.comprehension)):
            for name in target_names(node.target):
                values.setdefault(name, []).append(
                    node.iter if isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name)
                    and node.iter.func.id == "range" else None)
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, vals in values.items():
            if name not in out and vals and all(v is not None and _python_number(v, out) for v in vals):
                out.add(name)
                changed = True
    return out


def q_is_builtin(mctx, f: ast.Name) -> bool:
    """``f`` names the builtin (not a function or import of the module)."""
    return f.id not in mctx.module_names and mctx.imports.qualname(f) is None


def _python_value(expr: ast.AST, known: set[str]) -> bool:
    """``expr`` is made of Python numbers and a tensor's static metadata (sizes,
    numbers of dimensions): converting it reads nothing back from the device."""
    return _python_number(expr, known, metadata=True)


def _python_number(expr: ast.AST, known: set[str], metadata: bool = False) -> bool:
    """``expr`` is a Python number (with ``metadata``, also a tensor's size or
    number of dimensions, or any literal)."""
    def python(e: ast.AST) -> bool:
        return _python_number(e, known, metadata)

    if isinstance(expr, ast.Constant):
        return metadata or isinstance(expr.value, (int, float))  # bools included
    if isinstance(expr, ast.Name):
        return expr.id in known
    if isinstance(expr, ast.BinOp):
        return python(expr.left) and python(expr.right)
    if isinstance(expr, ast.UnaryOp):
        return python(expr.operand)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in ("len", "range", "int",
                                                                                          "min", "max", "abs"):
        return True
    if not metadata:
        return False
    if isinstance(expr, ast.Attribute) and expr.attr == "ndim":
        return True
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape":
        return python(expr.slice)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and \
            expr.func.attr in ("size", "dim", "numel", "ndimension"):
        return all(python(a) for a in expr.args)
    return False


def _op(op: ast.operator) -> str:
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**",
            ast.FloorDiv: "//", ast.Mod: "%", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
            ast.LShift: "<<", ast.RShift: ">>"}.get(type(op), "?")


# ---------------------------------------------------------------------------- the loop body

def check_body(la, element: str, attr: str) -> list:
    """The body calls its layer and computes with tensors; returns the spans of
    every call of the layer.  Declines what the step of ``scan_layers`` cannot
    hold (the first of :func:`body_problems`)."""
    uses, problems = body_problems(la, element, attr)
    if problems:
        raise problems[0]
    return uses


def body_problems(la, element: str, attr: str) -> tuple[list, list[Decline]]:
    """The spans of every call of the layer, and everything in the body the step
    of ``scan_layers`` cannot hold, in the order the rules find them."""
    mctx, loop = la.mctx, la.loop
    problems: list[Decline] = []
    for stmt in loop.body:
        if growth_statement(stmt) is not None:
            continue  # a tuple growing per layer: `layer_outputs`
        if isinstance(stmt, ast.AugAssign):
            target = stmt.target
            problems.append(Decline("L2S333", f"`{short(ast.unparse(stmt))}` updates `{short(ast.unparse(target))}` in place "
                          f"(in PyTorch `+=` on a tensor changes it, possibly the caller's); write "
                          f"`{short(ast.unparse(target))} = {short(ast.unparse(target))} {_op(stmt.op)} ...`", stmt))
        elif isinstance(stmt, ast.If) and _is_checkpointing_test(stmt.test):
            problems.append(Decline("L2S332", f"the body branches on `{short(ast.unparse(stmt.test))}` (a gradient-"
                          "checkpointing branch): the step runs one code path for every layer; turn "
                          "checkpointing off for the scanned loop or keep the loop", stmt))
        elif not isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.Expr, ast.Pass)):
            problems.append(Decline("L2S332", f"the body holds a `{type(stmt).__name__.lower()}` statement; the step of "
                          "`scan_layers` runs the same code for every layer (keep the body to assignments and "
                          "calls)", stmt))
    if element in all_written_names(loop.body):
        problems.append(Decline("L2S305", f"the loop variable `{element}` is reassigned in the body", loop))
    uses = []
    calls = {id(n.func) for n in walk_all(loop.body) if isinstance(n, ast.Call)}
    for node in walk_all(loop.body):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.endswith("__") \
                    and f.attr not in NOT_IN_PLACE:
                problems.append(Decline("L2S333", f"`{short(ast.unparse(node))}` updates a tensor in place", node))
            if any(k.arg == "out" for k in node.keywords):
                problems.append(Decline("L2S333", f"`{short(ast.unparse(node))}` writes into `out=`", node))
            if isinstance(f, ast.Attribute) and f.attr in HOST_METHODS:
                problems.append(Decline("L2S202", f"`{short(ast.unparse(node))}` reads a tensor back to the host", node))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            problems.append(Decline("L2S331", f"`{short(ast.unparse(node))}` {_INVERT_WHY}", node))
        if isinstance(node, ast.Name) and node.id == element and isinstance(node.ctx, ast.Load):
            if id(node) not in calls:
                parent = mctx.parent(node)
                what = short(ast.unparse(parent)) if parent is not None and not isinstance(parent, ast.stmt) \
                    else element
                problems.append(Decline("L2S332", f"`{what}` uses the layer other than by calling it; `scan_layers` runs "
                              "the first layer's code, so only calls of the layer are per layer", node))
            uses.append(mctx.span(node))
        if isinstance(node, ast.Name) and node.id == "self" and isinstance(node.ctx, ast.Load):
            parent = mctx.parent(node)
            top = node
            while isinstance(parent, ast.Attribute):
                top, parent = parent, mctx.parent(parent)
            if isinstance(parent, ast.Call) and parent.func is top:
                problems.append(Decline("L2S332", f"the body calls `{short(ast.unparse(top))}`, a part of `self` shared by "
                              "every layer: the step of `scan_layers` cannot close over its tensors (call it "
                              "before or after the loop)", parent))
            if top is node:
                problems.append(Decline("L2S332", "the body passes `self` on; the step would close over the whole module",
                              node))
            if isinstance(top, ast.Attribute) and top.attr == attr:
                problems.append(Decline("L2S332", f"the body reads `self.{attr}` itself", top))
    for node in walk_all(loop.body):
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.GeneratorExp, ast.DictComp, ast.SetComp)):
            problems.append(Decline("L2S332", f"`{short(ast.unparse(node))}` defines a scope of its own in the body; keep "
                          "the body to plain calls and arithmetic", node))
    if not uses:
        problems.append(Decline("L2S332", f"the body never calls `{element}`", loop))
    return uses, problems


def _is_checkpointing_test(test: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and "checkpoint" in n.attr for n in walk(test)) or \
        any(isinstance(n, ast.Name) and "checkpoint" in n.id for n in walk(test))


# ---------------------------------------------------------------------------- values shared by every layer

def shared_values(la, scan: TorchLayerScan, broadcast: list[str]) -> list[SharedValue]:
    """What the body reads from outside it, each shown to be a tensor (or
    ``None``) or a Python value; the calls of functions are checked for effects."""
    mctx, loop = la.mctx, la.loop
    out: list[SharedValue] = []
    taken = {"layer"}
    # `self.<chain>` reads: Python values of the module (`self.training`, `self.config.x`)
    chains: dict[str, list] = {}
    for node in walk_all(loop.body):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            parent = mctx.parent(node)
            if isinstance(root, ast.Name) and root.id == "self" and not isinstance(parent, ast.Attribute):
                chains.setdefault(ast.unparse(node), []).append(node)
    for text, nodes in chains.items():
        node = nodes[0]
        if not _python_chain(node) and not (isinstance(node.value, ast.Name) and python_attribute(la, node.attr)):
            raise Decline("L2S334", f"`{text}` is passed to every layer, and nothing shows whether it is a tensor or "
                          "a Python value (`self.training`, `self.config...` and attributes `__init__` sets from "
                          "literals or Python-valued parameters are known to be Python values)",
                          node)
        out.append(SharedValue(text, _attr_name(node.attr, taken), False, [mctx.span(n) for n in nodes]))
    for name in broadcast:
        nodes = [n for n in walk_all(loop.body) if isinstance(n, ast.Name) and n.id == name
                 and isinstance(n.ctx, ast.Load)]
        if not nodes:
            continue
        if name == "self" and all(isinstance(mctx.parent(n), ast.Attribute) for n in nodes):
            continue  # only the roots of the `self.<chain>` reads above
        kind = _value_kind(la, name)
        if kind is None:
            raise Decline("L2S334", f"`{name}` is passed to every layer, and nothing shows whether it is a tensor "
                          "(or `None`) or a Python value", nodes[0])
        if kind == "tensor" and _computed_here(la, name):
            from .torch_time import needs_no_gradient

            if not needs_no_gradient(la, name):
                raise Decline("L2S334", f"`{name}` is computed in the function and passed to every layer, and "
                              "nothing shows it needs no gradient (an integer or boolean tensor, or one built by a "
                              "`torch` factory from Python values): `scan_layers` "
                              "copies the first step module, and a computed tensor that needs gradients cannot be "
                              "copied", nodes[0])
        out.append(SharedValue(name, _attr_name(name, taken), kind == "tensor", [mctx.span(n) for n in nodes]))
    # calls of functions other than the layer: checked like layer code
    here = _Found(mctx, la.func)
    checker = _CodeChecker(here, {}, "the loop body", 0, set())
    for node in walk_all(loop.body):
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == scan.element):
            checker.check_call(here, node, is_method=False)
    return out


#: Attributes of ``nn.Module`` an adapter's own attribute must not shadow.
_MODULE_ATTRS = {"training", "forward", "layer", "parameters", "buffers", "children", "modules", "state_dict",
                 "train", "eval", "to", "cuda", "cpu", "float", "double", "half", "type", "apply", "register_buffer",
                 "register_parameter", "register_module", "add_module", "zero_grad", "requires_grad_",
                 "named_parameters", "named_buffers", "named_children", "named_modules", "load_state_dict",
                 "extra_repr", "call_super_init", "dump_patches", "get_submodule", "get_parameter", "get_buffer",
                 "bfloat16", "share_memory", "xpu", "ipu", "mtia", "to_empty", "set_extra_state", "get_extra_state"}


def _attr_name(base: str, taken: set) -> str:
    name = base.lstrip("_") or "value"
    if name in _MODULE_ATTRS or name.startswith("_"):
        name = f"shared_{name}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _python_chain(node: ast.Attribute) -> bool:
    parts = []
    n = node
    while isinstance(n, ast.Attribute):
        parts.append(n.attr)
        n = n.value
    parts.reverse()
    return parts == ["training"] or (len(parts) >= 2 and parts[0] in ("config", "cfg"))


def python_attribute(la, attr: str) -> bool:
    """``self.<attr>`` of the class holding the loop is a Python value: assigned
    only in ``__init__``, each time a literal, a parameter of ``__init__``
    annotated or defaulted as a Python value, or arithmetic of such."""
    cls = la.mctx.enclosing_class(la.func) if la.func is not None else None
    init = _init(cls) if cls is not None else None
    if init is None:
        return False
    builds = _assignments(cls, attr)
    inside = {id(n) for n in walk(init)}
    if not builds or any(id(b) not in inside or not isinstance(b, ast.Assign) or len(b.targets) != 1
                         or not _is_self_attr(b.targets[0], attr) for b in builds):
        return False
    params = {a.arg: a for a in [*init.args.posonlyargs, *init.args.args, *init.args.kwonlyargs]}
    defaults = dict(zip([a.arg for a in [*init.args.posonlyargs, *init.args.args]][::-1],
                        init.args.defaults[::-1]))
    defaults.update({a.arg: d for a, d in zip(init.args.kwonlyargs, init.args.kw_defaults) if d is not None})

    def python(expr: ast.AST) -> bool:
        if isinstance(expr, ast.Constant):
            return True
        if isinstance(expr, ast.Name) and expr.id in params:
            arg = params[expr.id]
            if arg.annotation is not None:
                return _annotation_kind(la.mctx, arg.annotation) == "python"
            d = defaults.get(expr.id)
            return isinstance(d, ast.Constant) and d.value is not None
        if isinstance(expr, ast.BinOp):
            return python(expr.left) and python(expr.right)
        if isinstance(expr, (ast.UnaryOp,)):
            return python(expr.operand)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in (
                "int", "float", "bool", "str", "len", "min", "max", "abs") and expr.func.id not in la.mctx.module_names:
            return True
        return False

    return all(python(b.value) for b in builds)


def _value_kind(la, name: str) -> Optional[str]:
    """``"tensor"`` (a tensor, or ``None``), ``"python"`` (a Python value) or
    ``None`` (not known) for a name the body reads from outside."""
    fctx = la.fctx
    defs = fctx.defs_before(la.loop, name)
    kinds = set()
    for d in defs:
        if d.kind == "param":
            kinds.add(_param_kind(la, name))
        elif d.kind in ("assign",) and getattr(d, "node", None) is not None:
            value = _assigned_value(d.node, name)
            kinds.add(_expr_kind(la, value) if value is not None else None)
        else:
            kinds.add(None)
    if len(kinds) != 1:
        return None
    return kinds.pop()


def _computed_here(la, name: str) -> bool:
    """``name`` is bound by the function itself before the loop (not only a parameter)."""
    return any(d.kind != "param" for d in la.fctx.defs_before(la.loop, name))


def may_be_none(la, name: str) -> bool:
    """``name`` may be ``None`` where the loop starts: an ``Optional`` annotation,
    a ``None`` default or an assignment of ``None``."""
    fctx = la.fctx
    for d in fctx.defs_before(la.loop, name):
        if d.kind == "param":
            ann = fctx.param_annotations.get(name)
            default = fctx.param_defaults.get(name)
            if isinstance(default, ast.Constant) and default.value is None:
                return True
            if ann is not None and ("Optional" in ast.unparse(ann) or "None" in ast.unparse(ann)):
                return True
        elif d.kind == "assign":
            value = _assigned_value(d.node, name)
            if value is None or (isinstance(value, ast.Constant) and value.value is None):
                return True
        else:
            return True
    return False


def _assigned_value(stmt: ast.AST, name: str) -> Optional[ast.AST]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
            and stmt.targets[0].id == name:
        return stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.value
    return None


def _param_kind(la, name: str) -> Optional[str]:
    fctx = la.fctx
    ann = fctx.param_annotations.get(name)
    default = fctx.param_defaults.get(name)
    if ann is not None:
        return _annotation_kind(la.mctx, ann)
    if isinstance(default, ast.Constant) and default.value is not None:
        return "python"
    return None


def _annotation_kind(mctx, ann: ast.AST) -> Optional[str]:
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            ann = ast.parse(ann.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(ann, ast.Subscript) and (getattr(ann.value, "id", None) == "Optional"
                                          or getattr(ann.value, "attr", None) == "Optional"):
        return _annotation_kind(mctx, ann.slice)
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        sides = [a for a in (ann.left, ann.right) if not (isinstance(a, ast.Constant) and a.value is None)]
        kinds = {_annotation_kind(mctx, a) for a in sides}
        return kinds.pop() if len(kinds) == 1 else None
    q = mctx.imports.qualname(ann)
    if q is not None and is_under(q, "torch") and q.endswith("Tensor"):
        return "tensor"
    if isinstance(ann, ast.Name) and ann.id in ("bool", "int", "float", "str"):
        return "python"
    return None


def _operand_kind(la, node: ast.AST) -> Optional[str]:
    """The kind of an operand of arithmetic: an expression :func:`_expr_kind`
    knows, or a parameter the function never rebinds (its annotation or
    default tells)."""
    if isinstance(node, ast.Name):
        defs = la.fctx.defs_before(la.loop, node.id)
        if defs and all(d.kind == "param" for d in defs) and node.id not in all_written_names(la.func.body):
            return _param_kind(la, node.id)
        return None
    return _expr_kind(la, node)


_TORCH_TUPLES = {"split", "chunk", "unbind", "tensor_split", "sort", "topk", "max", "min", "meshgrid",
                 "broadcast_tensors", "split_with_sizes", "unique", "lu", "qr", "svd", "eig", "where"}


def _expr_kind(la, value: ast.AST) -> Optional[str]:
    if isinstance(value, ast.Constant):
        return "python"
    if isinstance(value, ast.UnaryOp) and not isinstance(value.op, ast.Not):
        return _expr_kind(la, value.operand)
    if isinstance(value, ast.BinOp):
        # arithmetic: a tensor with tensors or Python numbers is a tensor; Python numbers stay Python numbers
        kinds = {_operand_kind(la, value.left), _operand_kind(la, value.right)}
        if None in kinds:
            return None
        return "tensor" if "tensor" in kinds else "python"
    if isinstance(value, ast.Call):
        q = la.mctx.imports.qualname(value.func)
        if q is not None and is_under(q, "torch") and not is_under(q, "torch.nn") and \
                q.rsplit(".", 1)[-1] not in _TORCH_TUPLES and q.rsplit(".", 1)[-1][:1].islower() \
                and not q.rsplit(".", 1)[-1].startswith(("is_", "get_")):
            return "tensor"
    return None


# ----------------------------------------------------------------------------- examples

_HEADER = """\
import torch
import torch.nn as nn
import torch_xla


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h, mask):
        return h + torch.tanh(self.lin(h)) * mask


"""


def torch_decoder(build: str = "nn.ModuleList([Block(d) for _ in range(n)])", body: str = "h = layer(h, mask)",
                  header: str = "for layer in self.layers:", init: str = "", block: str = "",
                  signature: str = "def forward(self, h: torch.Tensor, mask: torch.Tensor):") -> str:
    """A module of ``Block`` (or ``block``) and a ``Decoder`` whose ``__init__``
    builds ``self.layers`` with ``build`` and whose ``forward`` runs ``body`` per layer."""
    extra = f"\n        {init}" if init else ""
    return (block or _HEADER) + f"""\
class Decoder(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.layers = {build}{extra}

    {signature}
        {header}
            {body}
        return h
"""


_DECODER = torch_decoder()[len(_HEADER):]

INVALID = (
    Invalid("L2S330", "layer-index-argument",
            torch_decoder("nn.ModuleList([Block(d * (i + 1)) for i in range(n)])  # <-"),
            says=("layer index", "`i`"), framework="torch_xla", header=False),
    Invalid("L2S331", "batch-norm-in-the-layer", _HEADER.replace("self.lin = nn.Linear(d, d)",
                                                                 "self.lin = nn.Linear(d, d)\n        "
                                                                 "self.norm = nn.BatchNorm1d(d)  # <-").replace(
        "return h + torch.tanh(self.lin(h)) * mask", "return h + self.norm(self.lin(h)) * mask") + _DECODER, says=("BatchNorm1d", "running statistics"), framework="torch_xla", header=False),
    Invalid("L2S331", "attribute-write-in-forward", _HEADER.replace(
        "return h + torch.tanh(self.lin(h)) * mask", "self.last = h  # <-\n        return h + self.lin(h) * mask")
        + _DECODER, says=("self.last", "stacked copy"), framework="torch_xla", header=False),
    Invalid("L2S331", "dropout-in-the-layer", _HEADER.replace(
        "self.lin = nn.Linear(d, d)", "self.lin = nn.Linear(d, d)\n        self.drop = nn.Dropout(0.1)  # <-").replace(
        "return h + torch.tanh(self.lin(h)) * mask", "return h + self.drop(self.lin(h)) * mask") + _DECODER, says=("Dropout", "same"), framework="torch_xla", header=False),
    Invalid("L2S330", "layers-changed-one-by-one", torch_decoder() + """
    def set_scales(self):
        for i, layer in enumerate(self.layers):
            layer.scale = float(i)  # <-
""", says=("`layer.scale`", "first layer's"), framework="torch_xla", header=False),
    Invalid("L2S331", "layer-appends-to-a-list", _HEADER.replace(
        "self.lin = nn.Linear(d, d)", "self.lin = nn.Linear(d, d)\n        self.seen = []").replace(
        "return h + torch.tanh(self.lin(h)) * mask", "self.seen.append(h.shape)  # <-\n        "
        "return h + torch.tanh(self.lin(h)) * mask") + _DECODER, says=("`self.seen.append", "outlives"),
        framework="torch_xla", header=False),
    Invalid("L2S331", "float-of-a-tensor", torch_decoder(
        body="h = layer(h, mask)\n            h = h / (1.0 + float(h.abs().max()))  # <-"),
        says=("`float(h.abs().max())`", "host"), framework="torch_xla", header=False),
    Invalid("L2S334", "computed-tensor-to-every-layer", torch_decoder(
        header="gate = torch.sigmoid(mask)\n        for layer in self.layers:", body="h = layer(h, gate)  # <-"),
        says=("`gate`", "gradient"), framework="torch_xla", header=False),
    Invalid("L2S331", "invert-of-a-boolean-mask", torch_decoder(body="h = layer(h, ~mask)  # <-"),
            says=("`~mask`", "logical_not"), framework="torch_xla", header=False),
    Invalid("L2S332", "per-layer-outputs", torch_decoder(
        body="h = layer(h, mask)\n            if self.keep:  # <-\n                states.append(h)",
        init="self.keep = True").replace("        for layer", "        states = []\n        for layer"),
        says=("`if` statement",), framework="torch_xla", header=False),
    Invalid("L2S332", "gradient-checkpointing-branch", torch_decoder(
        body="if self.gradient_checkpointing and self.training:  # <-\n                h = torch.utils.checkpoint."
             "checkpoint(layer, h, mask)\n            else:\n                h = layer(h, mask)",
        init="self.gradient_checkpointing = False"),
        says=("gradient-checkpointing",), framework="torch_xla", header=False),
    Invalid("L2S332", "collects-a-value-not-carried", torch_decoder(
        header="outs = ()\n        for layer in self.layers:",
        body="y = layer(h, mask)\n            outs = outs + (y * mask,)  # <-\n            h = y"),
        says=("`outs`", "not shown to be a tensor"), framework="torch_xla", header=False),
    Invalid("L2S332", "collects-under-a-test-of-unknown-kind", torch_decoder(
        signature="def forward(self, h: torch.Tensor, mask: torch.Tensor, keep):",
        header="kept = ()\n        for layer in self.layers:",
        body="if keep:  # <-\n                kept = kept + (h,)\n            h = layer(h, mask)"),
        says=("`keep`", "Python value"), framework="torch_xla", header=False),
    Invalid("L2S333", "in-place-add", torch_decoder(body="h += layer(h, mask)  # <-"),
            says=("in place", "h = h + ..."), framework="torch_xla", header=False),
    Invalid("L2S334", "unknown-shared-value", torch_decoder(
        signature="def forward(self, h, mask):", body="h = layer(h, mask)  # <-"),
        says=("`mask`", "tensor"), framework="torch_xla", header=False),
)
