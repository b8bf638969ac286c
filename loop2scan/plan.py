"""The framework-neutral result of analysing one loop.

The analysis (``loop2scan.analysis``) reads source through Python's ``ast`` and
produces, for every ``for`` loop, either a :class:`ScanPlan` or a decline.  The
plan says *what* the scan is (carries, per-step inputs, per-step outputs,
broadcast values, direction and trip count) and *which pieces of source* take
part, as :class:`Span` references.  Emitters in ``codemods/`` turn a plan into
code for one target API; they locate the spans in their own syntax tree and
never re-derive dataflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass(frozen=True, order=True)
class Span:
    """A node of the source: 1-based lines, 0-based *character* columns, and the
    ``ast`` class name of the node (``"Subscript"``, ``"Call"``, ``"Assign"``...)."""

    line: int
    col: int
    end_line: int
    end_col: int
    kind: str

    def to_json(self) -> dict:
        return {"line": self.line, "col": self.col + 1, "end_line": self.end_line, "end_col": self.end_col + 1}


@dataclass(frozen=True)
class Bound:
    """An integer expression used in slice bounds: ``text`` plus a constant
    ``offset``.  ``text`` is ``None`` for a pure constant."""

    text: Optional[str]
    offset: int = 0

    def render(self) -> str:
        if self.text is None:
            return str(self.offset)
        if self.offset == 0:
            return self.text
        base = self.text if is_atomic(self.text) else f"({self.text})"
        return f"{base} + {self.offset}" if self.offset > 0 else f"{base} - {-self.offset}"

    @property
    def is_zero(self) -> bool:
        return self.text is None and self.offset == 0


def is_atomic(text: str) -> bool:
    """``text`` needs no parentheses as an operand (no top-level operator)."""
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in "+-*/%<>=!&|^ ,@":
            return False
    return True


@dataclass
class XsItem:
    """One per-step input.

    kind:
      ``"elements"``  scan ``source`` itself (the loop iterated over it);
      ``"slice"``     scan ``source`` sliced along ``axis`` by ``start:stop:step``
                      (the loop indexed ``source[..., t + c, ...]``);
      ``"arange"``    scan the integer index values ``range(start, stop, step)``.
    ``bind`` is the name (or, for ``"elements"``, the target pattern source) the
    step function binds this input to.  ``replaces`` are the subscript
    expressions in the body that become ``bind``.
    """

    kind: Literal["elements", "slice", "arange", "layers"]
    bind: str
    source: Optional[Span] = None
    source_text: str = ""
    axis: int = 0
    start: Optional[Bound] = None
    stop: Optional[Bound] = None
    step: int = 1
    stop_is_full: bool = False  # the slice runs to the end of the axis
    wrap_asarray: bool = False  # the source may be a Python list: make it one array
    replaces: list[Span] = field(default_factory=list)
    replace_drop: list[Optional[int]] = field(default_factory=list)  # per read: index part to drop, or None
    range_args: list[str] = field(default_factory=list)  # for "arange": the range(...) arguments as written
    layer_slice: Optional[str] = None  # for "layers": `a:b` when the loop iterates `params[a:b]`
    layout: str = "stacked"  # for "layers": "stacked" or "keep"
    # statements `NAME = <a read this input replaces>` made redundant by binding the input to NAME
    # (``bind``): they are removed from the step
    drop: list[Span] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "arange":
            return f"range({', '.join(self.range_args)}) as {self.bind}"
        if self.kind == "layers":
            part = f"{self.source_text}[{self.layer_slice}]" if self.layer_slice else self.source_text
            return f"the layers of {part} ({self.layout} layout) as {self.bind}"
        text = self.source_text
        if self.kind == "slice":
            text += f"[{self.slice_text()}]" if self.slice_text() != ":" else ""
        axis = f", axis {self.axis}" if self.axis != 0 else ""
        return f"{text}{axis} as {self.bind}"

    def slice_text(self) -> str:
        start = "" if self.start is None or self.start.is_zero else self.start.render()
        stop = "" if self.stop_is_full or self.stop is None else self.stop.render()
        text = f"{start}:{stop}"
        if self.step != 1:
            text += f":{self.step}"
        return text


@dataclass
class LayoutEdit:
    """A use of a per-layer parameter list rewritten for the stacked layout.

    kind: ``"builder-return"`` (the builder returns ``stack(E)``), ``"len"``
    (``len(v)``), ``"index"`` (``v[i]``), ``"slice"`` (``v[a:b]``)."""

    kind: Literal["builder-return", "len", "index", "slice"]
    span: Span
    arg: Optional[Span] = None
    text: str = ""
    # for "builder-return": the comprehension variable when the list `[f(k, ...) for k in keys]` is
    # built stacked as `jax.vmap(lambda k: f(k, ...))(keys)` (loop2scan.analysis.builders); ``None``:
    # the built list is stacked with `jax.tree.map(lambda *layer: jnp.stack(layer), *E)`
    vmap: Optional[str] = None


@dataclass
class LayoutChange:
    """How a layer loop's parameter list changes layout.

    ``mode="stacked"``: the builder now returns one pytree with a leading layer
    axis, and ``edits`` adapt the other uses; ``mode="keep"``: the list is
    stacked inside the function on every call."""

    mode: Literal["stacked", "keep"]
    name: str  # the structure as named in the loop's function
    builder: Optional[str] = None
    builder_line: Optional[int] = None
    edits: list[LayoutEdit] = field(default_factory=list)
    returned_from: list[str] = field(default_factory=list)
    key: int = 0  # identifies the structure within the module

    def describe(self) -> str:
        if self.mode == "keep":
            return (f"`{self.name}` stays a list; it is stacked inside the function on every call "
                    "(an O(layers) copy per call, more under jax.grad: `--layout stacked` avoids it)")
        where = ", ".join(f"line {e.span.line} ({e.kind})" for e in self.edits)
        text = (f"`{self.name}` (built by `{self.builder}`, line {self.builder_line}) now has the stacked layout: "
                f"one pytree with a leading layer axis; edited: {where}")
        if self.returned_from:
            text += f"; returned by {', '.join(self.returned_from)} in the new layout"
        return text


@dataclass
class Consumer:
    """A use of a list/tuple accumulator after the loop.

    kind: ``"stack"`` (``jnp.stack(outs, axis=k)``), ``"array"`` (``jnp.array`` /
    ``jnp.asarray``), ``"sequence"`` (another ``jnp`` function taking a sequence
    of arrays, kept as a call on the stacked array), ``"len"``, ``"index"``
    (``outs[i]``), ``"tree-stack"`` (``jax.tree.map(lambda *xs: jnp.stack(xs, axis=k), *outs)``:
    per-step pytrees stacked leaf by leaf).  ``flipped`` means the consumer read ``outs[::-1]``."""

    span: Span  # the whole consumer expression
    kind: Literal["stack", "array", "sequence", "len", "index", "tree-stack"]
    axis: int = 0
    flipped: bool = False
    arg: Optional[Span] = None  # the argument expression (``outs`` or ``outs[::-1]``)
    # the statement ``outs = <consumer>`` when the consumer is its whole value: removed when the
    # consumer becomes ``outs`` itself (no ``outs = outs``)
    statement: Optional[Span] = None


@dataclass
class YsItem:
    """One per-step output.

    kind:
      ``"append"``  ``outs.append(v)`` / ``acc += (v,)`` collected and stacked;
      ``"at_set"``  ``out = out.at[..., t, ...].set(v)`` written back after the scan;
      ``"last"``    a name assigned in every step and read after the loop: its last value;
      ``"discard"`` a list or tuple collected in the loop but never read after it: not collected.
    """

    kind: Literal["append", "at_set", "last", "discard"]
    name: str  # the accumulator / array / name it ends up in after the loop
    value: Optional[Span] = None  # the per-step value expression
    value_is_name: Optional[str] = None  # the value is this plain name, read at step end
    bind_value: bool = False  # the value must be bound where it was computed (names it reads change later)
    wrap_asarray: bool = False  # the value may be a non-array (tuple, Python scalar)
    statement: Optional[Span] = None  # the statement in the body producing it (removed from the step)
    init: Optional[Span] = None  # the `outs = []` statement (removed)
    consumers: list[Consumer] = field(default_factory=list)
    # for "at_set": the index expression with the loop index at position ``axis``
    at_index_before: list[str] = field(default_factory=list)  # index parts before the loop index
    at_axis: int = 0  # the axis the loop index writes (negative after a leading `...`)
    at_offset: int = 0
    at_target: Optional[Span] = None  # the `out.at[...]` expression
    at_slice: Optional[str] = None  # the index written after the scan, as a slice (`1:T`)
    at_arange: Optional[list[str]] = None  # ... or as index values: range(...) arguments


@dataclass
class Counter:
    """The loop index carried as a Python-started counter: ``name`` starts at
    ``init`` (source text) and advances by ``step`` each step.  Carried rather
    than scanned, it stays weakly typed like the ``int`` the loop gave, so index
    arithmetic promotes as it did (``b ** (t + 1)`` stays float32 under x64 and
    passes strict promotion)."""

    name: str
    init: str
    step: int = 1


@dataclass
class ModuleBuild:
    """How a stack of modules is built once stacked (``codemods/nnx_scan.py``):
    the statement building the list in the constructor becomes a factory that
    builds one module per layer under ``nnx.vmap``, each from its own split of
    the ``nnx.Rngs``, and ``self.<attr>`` is that stacked module."""

    span: Span  # the `self.<attr> = ...` statement
    attr: str
    constructor: str  # one layer's constructor call, as written (`Block(cfg, rngs=rngs)`)
    count: str  # the number of layers, as written
    rngs: str  # the `nnx.Rngs` name every layer draws from
    loop_span: Optional[Span] = None  # the `append` loop filling the list (removed), when built that way
    names: set[str] = field(default_factory=set)  # the names the constructor uses (the factory avoids them)
    cls: str = ""  # the class, for messages
    # the layers may carry sharding metadata (partition names): the stacked axis gets a name of its own
    partitioned: bool = False


@dataclass
class ModuleScan:
    """A loop calling each module of a stack in turn (``for layer in self.layers``),
    scanned with ``nnx.scan`` over the stacked module."""

    attr: str  # `layers` in `self.layers`
    element: str  # the loop variable
    build: ModuleBuild
    # `--layout keep`: the list stays a list; each call stacks its layers' states into one module for the
    # scan and writes the changed states back to each layer
    keep: bool = False

    def describe(self) -> str:
        if self.keep:
            return (f"`self.{self.attr}` stays a list of modules (`--layout keep`): on every call the layers' "
                    "states are stacked into one module for the scan (an O(layers) copy per call, more under "
                    "`grad`) and the changed states are written back to each layer; `--layout stacked` builds "
                    "the stack once")
        return (f"`self.{self.attr}` becomes one stacked module (built at line {self.build.span.line} under "
                f"`nnx.vmap`, one split of `{self.build.rngs}` per layer): new weights are drawn differently from "
                "the same seed; existing weights and checkpoints carry over with `loop2scan convert-state`")


@dataclass
class CarriedModule:
    """A submodule of ``self`` the loop calls every step (an NNX recurrent cell):
    carried through ``nnx.scan`` (``nnx.Carry``), so its parameters are shared by
    every step and the state it changes (RNG counts) advances step by step."""

    expr: str  # `self.cell`
    name: str  # what the step calls it: `cell`
    uses: list[Span] = field(default_factory=list)  # every `self.cell` in the body


@dataclass
class SharedValue:
    """A value the body of a loop over torch layers reads from outside it: it
    reaches the step of ``scan_layers`` through the adapter module, as a buffer
    (a tensor, or ``None``) or as a plain attribute (a Python value)."""

    expr: str  # as written in the body: `mask`, `self.training`
    attr: str  # the adapter's attribute
    tensor: bool  # a tensor or None (a buffer), else a Python value
    uses: list[Span] = field(default_factory=list)  # every read in the body


@dataclass
class LayerOutput:
    """A tuple that grows by one item per layer in a loop over torch layers
    (``all_hidden_states += (h,)``, possibly under ``if output_hidden_states:``):
    the step returns the item (``None`` where the flag is off), the scan stacks
    it, and the tuple grows by the stacked items after the loop."""

    name: str  # the tuple (`all_hidden_states`)
    statement: int  # the index of its statement (the `if`, when guarded) in the loop body
    augmented: bool  # written `acc += (v,)` (else `acc = acc + (v,)`)
    guarded: bool  # the only statement of an `if` on Python values


@dataclass
class TorchLayerScan:
    """A loop calling each layer of a list of torch modules in turn, run with
    ``torch_xla``'s ``scan_layers`` (``codemods/torch_xla_scan.py``)."""

    attr: str  # `layers` in `self.layers`
    element: str  # the loop variable
    element_uses: list[Span]  # every call of it in the body
    cls: str  # the class whose method holds the loop
    layer_class: str  # the class of every layer
    iterable: str  # what the loop iterates, as written (`self.layers`, `self.layers[:n]`)
    shared: list[SharedValue] = field(default_factory=list)
    # the body is `carry = layer(carry)` (a tuple of carries in and out alike) and nothing else is passed:
    # `scan_layers` runs the list's own layers, no step module
    direct: bool = False
    pure: bool = False  # `is_layer_pure=True` (`--assume-pure`, direct form only)
    assume_pure: bool = False  # `--assume-pure` was asked for
    # tuples growing per layer: the step modules run with `torch_xla.experimental.scan.scan`, which
    # returns per-step outputs (`scan_layers` returns only the carry)
    outputs: list[LayerOutput] = field(default_factory=list)

    @property
    def form(self) -> str:
        return "direct" if self.direct else "scan" if self.outputs else "step-module"

    def describe(self) -> str:
        tensors = [s.expr for s in self.shared if s.tensor]
        values = [s.expr for s in self.shared if not s.tensor]
        if self.outputs:
            names = ", ".join(f"`{o.name}`" for o in self.outputs)
            parts = [f"`scan` runs the first `{self.layer_class}`'s code (through its step module, with "
                     "`torch.func.functional_call`) with every layer's parameters and buffers (stacked on each "
                     f"call), and returns what {names} collect per layer (stacked; unbound into the tuple after "
                     "the loop, so it holds the same tensors, in the same order); the list stays as it is"]
        else:
            parts = [f"`scan_layers` runs the first `{self.layer_class}`'s code with every layer's parameters and "
                     "buffers (stacked on each call); the list stays as it is"]
        if self.pure:
            parts.append("`is_layer_pure=True` (`--assume-pure`): the trace of the first call is reused by later "
                         "calls, so the layers' code must stay free of effects the analysis cannot see")
        elif self.direct:
            parts.append("every call traces the layer again (`--assume-pure` sets `is_layer_pure=True` and "
                         "reuses the trace)")
        elif self.assume_pure and self.outputs:
            parts.append("`--assume-pure` does not apply: the step function is defined on each call, and `scan` "
                         "keys its trace cache by the function")
        elif self.assume_pure:
            parts.append("`--assume-pure` does not apply: the step modules carrying the values passed to every "
                         "layer are built on each call, and `scan_layers` keys its trace cache by the first "
                         "layer's identity")
        if tensors:
            parts.append("tensors passed to every layer (" + ", ".join(f"`{t}`" for t in tensors)
                         + ") travel with the step as buffers (stacked with the layers)")
        if values:
            parts.append("Python values (" + ", ".join(f"`{v}`" for v in values) + ") as attributes")
        return "; ".join(parts)


@dataclass
class TorchCell:
    """A submodule of ``self`` a torch time loop calls every step
    (``self.cell(x_t, h)``): its parameters travel in the scan's carry (a step
    cannot close over tensors) and each call becomes
    ``functional_call(self.cell, cell_params, (x_t, h))``."""

    attr: str  # `cell` in `self.cell`
    name: str  # the carried dict of its parameters: `cell_params`
    calls: list[Span] = field(default_factory=list)  # every call of it in the body


@dataclass
class TorchTimeScan:
    """A time loop run with ``torch_xla.experimental.scan.scan``
    (``codemods/torch_xla_scan.py``)."""

    cells: list[TorchCell] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)  # tensors read from outside: carried unchanged
    closed: list[str] = field(default_factory=list)  # Python values read from outside: closed over

    def describe(self) -> str:
        parts = ["torch_xla's `scan` steps through the first axis of its inputs; the step cannot close over "
                 "tensors"]
        if self.cells:
            parts.append("the parameters of " + ", ".join(f"`self.{c.attr}`" for c in self.cells)
                         + " travel in the carry and are applied with `torch.func.functional_call` (gradients "
                         "reach the module's own parameters)")
        if self.carried:
            parts.append("tensors read from outside (" + ", ".join(f"`{n}`" for n in self.carried)
                         + ") travel in the carry unchanged")
        if self.closed:
            parts.append("Python values (" + ", ".join(f"`{n}`" for n in self.closed) + ") are closed over")
        return "; ".join(parts)


@dataclass(frozen=True)
class Context:
    """Where the loop's function runs, as far as the project shows.

    kind: ``"traced"`` (under a JAX transformation: ``jit``, ``grad``, ``vmap``,
    a scan or while body...), ``"eager"`` (module top level, constructors,
    functions only called from such places) or ``"unknown"`` (no caller seen,
    or callers of both kinds).  ``reason`` says what showed it, for ``explain``."""

    kind: Literal["traced", "eager", "unknown"]
    reason: str

    def describe(self) -> str:
        what = {"traced": "under a JAX transformation", "eager": "eager",
                "unknown": "may run eagerly"}[self.kind]
        return f"{what} ({self.reason})"


@dataclass
class ScanPlan:
    loop: Span
    function: str  # qualified name of the enclosing function, for messages
    carries: list[str]
    carry_inits: dict[str, str]
    xs: list[XsItem]
    ys: list[YsItem]
    broadcast: list[str]
    reverse: bool = False
    length: Optional[str] = None  # explicit `length=` for the scan call, when needed
    length_reason: str = ""
    target_text: str = ""  # the loop target as written, for "elements" unpacking
    target_pattern: Optional[Span] = None  # loop target span
    elements_pattern: str = ""  # how the step unpacks its inputs when iterating elements
    notes: list[str] = field(default_factory=list)
    reserved_names: set[str] = field(default_factory=set)  # names the step must not shadow
    function_names: set[str] = field(default_factory=set)  # every name used in the enclosing function
    step_reads: set[str] = field(default_factory=set)
    xs_tree: object = None  # how the step's inputs nest: an index into ``xs``, a list of such, or None
    layout: Optional[LayoutChange] = None  # set for loops over per-layer parameter lists
    local_names: set[str] = field(default_factory=set)  # names bound in the enclosing function
    counter: Optional[Counter] = None  # the loop index, carried (see Counter)
    # what the rewrite relies on that the code does not show (docs/assumptions.md), one sentence each
    assumptions: list[str] = field(default_factory=list)
    dtype_assumed: bool = False  # a carry's dtype is not visible: `--check` also runs it in bfloat16
    context: Optional[Context] = None  # where the function runs (traced, eager, unknown)
    # ``None``: the step is a closure defined in place of the loop (inside a transformation it is
    # traced once with the enclosing function).  A list: the step is defined once at module level,
    # before the top-level statement holding the loop, and these names of the function (its
    # broadcast values) ride in the carry unchanged, so that an eager call compiles it only once.
    hoisted: Optional[list[str]] = None
    role: str = "step"  # what the loop does, for the step's name: "rnn" -> `_rnn_step`, "layer" -> `_layer_step`
    discard: Optional[str] = "_"  # a name the scan's unused results may be bound to (None: none is free)
    nested_in: Optional[tuple[int, int]] = None  # (line, col) of the enclosing loop whose step holds this one
    modules: Optional[ModuleScan] = None  # set for loops over a stack of NNX modules (``nnx.scan``)
    cells: list[CarriedModule] = field(default_factory=list)  # NNX submodules carried by an ``nnx.scan`` over steps
    torch_layers: Optional[TorchLayerScan] = None  # set for loops over torch layers (``scan_layers``)
    torch_time: Optional[TorchTimeScan] = None  # set for torch time loops (torch_xla's ``scan``)


Status = Literal["rewritten", "declined", "skipped", "not-candidate"]


@dataclass
class LoopResult:
    """What happened to one loop; this is what reports and ``explain`` show."""

    line: int
    col: int  # 0-based character column
    end_line: int
    status: Status
    code: str
    message: str
    plan: Optional[ScanPlan] = None
    target: Optional[str] = None  # the emitted API, e.g. "jax.lax.scan"
    where: Optional[Span] = None  # the construct that caused a decline
    check: Optional[dict] = None  # the result of `--check` for a rewrite
    # every blocker the rules find for a declined loop over torch layers, the first being ``code``:
    # ``{"code", "message", "line"}`` (``line`` is ``None`` for a construct in another module)
    blockers: Optional[list] = None

    def to_json(self) -> dict:
        plan = self.plan
        data = {
            "line": self.line,
            "col": self.col + 1,
            "end_line": self.end_line,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "target": self.target,
            "carry": list(plan.carries) if plan else [],
            "xs": [
                {"expr": x.source_text if x.kind != "arange" else f"range({', '.join(x.range_args)})",
                 "axis": x.axis, "kind": x.kind, "as": x.bind,
                 **({"slice": x.slice_text()} if x.kind == "slice" else {})}
                for x in plan.xs
            ] if plan else [],
            "ys": [y.name for y in plan.ys] + [o.name for o in plan.torch_layers.outputs]
            if plan and plan.torch_layers else [y.name for y in plan.ys] if plan else [],
            "broadcast": list(plan.broadcast) if plan else [],
        }
        if plan:
            data["reverse"] = plan.reverse
            data["assumptions"] = list(plan.assumptions)
            if plan.context is not None:
                data["context"] = {"kind": plan.context.kind, "reason": plan.context.reason}
            data["step"] = {"form": "closure" if plan.hoisted is None else "module-level",
                            "passed": list(plan.hoisted or [])}
            if plan.length:
                data["length"] = plan.length
            if plan.cells:
                data["carried_modules"] = [c.expr for c in plan.cells]
            if plan.modules is not None:
                data["modules"] = {"attribute": plan.modules.attr, "as": plan.modules.element,
                                   "build_line": plan.modules.build.span.line, "count": plan.modules.build.count}
            if plan.torch_layers is not None:
                tl = plan.torch_layers
                data["layers"] = {"attribute": tl.attr, "as": tl.element, "class": tl.layer_class,
                                  "form": tl.form, "pure": tl.pure,
                                  "shared": [{"expr": v.expr, "as": v.attr, "tensor": v.tensor} for v in tl.shared],
                                  "collected": [o.name for o in tl.outputs]}
            if plan.torch_time is not None:
                tt = plan.torch_time
                data["torch_scan"] = {"modules": [f"self.{c.attr}" for c in tt.cells], "carried": tt.carried,
                                      "closed_over": tt.closed}
            if plan.layout is not None:
                lay = plan.layout
                data["layout"] = {"mode": lay.mode, "structure": lay.name, "builder": lay.builder,
                                  "builder_line": lay.builder_line,
                                  "edits": [{"kind": e.kind, "line": e.span.line} for e in lay.edits],
                                  "returned_from": lay.returned_from}
        if self.blockers:
            data["blockers"] = list(self.blockers)
        if self.where is not None:
            data["where"] = self.where.to_json()
        if self.check is not None:
            data["check"] = self.check
        return data
