"""Emit ``torch_xla``'s ``scan_layers`` for loops over lists of torch layers.

A plan with ``torch_layers`` set (``loop2scan.analysis.checks.torch_layers``)
becomes a small module, defined once before the class holding the loop, that
runs one step of the loop body for one layer, and a call of ``scan_layers``
over one such module per layer::

    class _DecoderLayerStep(nn.Module):
        \"\"\"One step of the loop over `self.layers` in `Decoder.forward`, for `scan_layers`.\"\"\"

        def __init__(self, layer, mask, deterministic):
            super().__init__()
            self.layer = layer
            self.register_buffer("mask", mask, persistent=False)
            self.deterministic = deterministic

        def forward(self, h):
            h = self.layer(h, self.mask, deterministic=self.deterministic)
            return h

    h = scan_layers([_DecoderLayerStep(layer, mask, deterministic) for layer in self.layers], h)

``scan_layers`` runs the first step module's code with every step module's
parameters and buffers: the layer's weights, and the tensors the loop passes
to every layer (a scanned step cannot close over a tensor; as buffers they
may be of any dtype, or ``None``).  Python values are plain attributes.  A
tuple carry is splatted into ``forward`` and returned as a tuple.

A loop that also grows tuples by one item per layer
(``if output_hidden_states: all_hidden_states += (h,)``) needs per-step
outputs, which ``scan_layers`` does not return: the step modules' ``forward``
returns the carry and the items (``None`` where the flag is off), and
``torch_xla.experimental.scan.scan`` runs the first step module with each
layer's stacked parameters and buffers (``torch.func.functional_call``, with
the step class's ``stacked_states``), as ``scan_layers`` does inside::

    steps = [_EncoderLayerStep(layer, mask, output_hidden_states) for layer in self.layers]
    if steps:
        def _layer_step(h, state):
            return functional_call(steps[0], state, (h,))

        h, all_hidden_states_items = scan(_layer_step, h, _EncoderLayerStep.stacked_states(steps))
        if output_hidden_states:
            all_hidden_states = all_hidden_states + all_hidden_states_items.unbind(0)

An empty list runs no scan (there is no layer to stack), as the loop runs no step.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from loop2scan.analysis.checks.torch_layers import SCANNED_AS
from loop2scan.plan import ScanPlan, is_atomic

from .common import (
    EditTransformer,
    ImportItem,
    MappingError,
    SpanIndex,
    block_statements,
    fresh_name,
    parse_expr,
    parse_stmt,
)
from .jax_scan import JaxScanEmitter, _PlanEmitter, _Refs

SCAN_LAYERS = ("torch_xla.experimental.scan_layers", "scan_layers")
SCAN = ("torch_xla.experimental.scan", "scan")
FUNCTIONAL_CALL = ("torch.func", "functional_call")


class TorchXlaEmitter(JaxScanEmitter):
    """Rewrites the planned loops over torch layers of one module."""

    target = SCANNED_AS

    def emits_lax_scan(self, plans: list[ScanPlan], edits) -> bool:
        return False

    def plan_emitter(self, plan: ScanPlan, index: SpanIndex, refs: _Refs, tr: EditTransformer,
                     reserved: set[str], taken: set[str]):
        if plan.torch_time is not None:
            return _TimeStepEmitter(plan, index, refs, tr, reserved, taken, owner=self)
        if plan.torch_layers is None:
            raise MappingError("the torch_xla target rewrites loops over lists of layers and time loops")
        return _LayerStepEmitter(self, plan, index, refs, tr, taken)

    def nn(self, refs: _Refs) -> str:
        """How this module spells ``torch.nn`` (``from torch import nn`` is added when it has none)."""
        for local, qual in sorted(self.aliases.items()):
            if qual == "torch.nn":
                return local
        for local, qual in sorted(self.aliases.items()):
            if qual == "torch":
                return f"{local}.nn"
        if "nn" in self.module_names:
            raise MappingError("the module binds the name `nn` to something else than `torch.nn`")
        _need(refs, ImportItem("torch", "nn"))
        return "nn"

    def scan_layers(self, refs: _Refs) -> str:
        return self.imported(refs, SCAN_LAYERS)

    def torch(self, refs: _Refs) -> str:
        """How this module spells ``torch`` (``import torch`` is added when it has none)."""
        for local, qual in sorted(self.aliases.items()):
            if qual == "torch":
                return local
        if "torch" in self.module_names:
            raise MappingError("the module binds the name `torch` to something else")
        _need(refs, ImportItem("torch"))
        return "torch"

    def imported(self, refs: _Refs, item: tuple[str, str]) -> str:
        """How this module spells ``module.name`` of ``item`` (``from module import
        name`` is added when it has none)."""
        module, name = item
        for local, q in sorted(self.aliases.items()):
            if q == f"{module}.{name}":
                return local
        for local, q in sorted(self.aliases.items()):
            if q == module:
                return f"{local}.{name}"
        if name in self.module_names:
            raise MappingError(f"the module binds the name `{name}` to something else")
        _need(refs, ImportItem(module, name))
        return name


def _need(refs: _Refs, item: ImportItem) -> None:
    if item not in refs.imports:
        refs.imports.append(item)


def _singular(attr: str) -> str:
    word = attr.strip("_") or "layer"
    if word.endswith("s") and len(word) > 1:
        word = word[:-1]
    return "".join(part[:1].upper() + part[1:] for part in word.split("_"))


class _LayerStepEmitter:
    def __init__(self, owner: TorchXlaEmitter, plan: ScanPlan, index: SpanIndex, refs: _Refs, tr: EditTransformer,
                 taken: set[str]) -> None:
        self.owner = owner
        self.plan = plan
        self.index = index
        self.refs = refs
        self.tr = tr
        self.taken = taken
        self.module = index.module
        tr.reserved = set()  # type: ignore[attr-defined]

    def register(self) -> None:
        plan, tr, index = self.plan, self.tr, self.index
        scan = plan.torch_layers
        loop = index.find(plan.loop)
        if not isinstance(loop, cst.For) or loop.asynchronous is not None:
            raise MappingError("the loop is not a plain `for` statement")
        if scan.outputs:
            self.functional_call = self.owner.imported(self.refs, FUNCTIONAL_CALL)
            self.scan = self.owner.imported(self.refs, SCAN)
        else:
            self.scan_layers = self.owner.scan_layers(self.refs)
        if scan.direct:
            tr.loops[id(loop)] = self._build_direct  # the list's own layers: no step module
            return
        self.nn = self.owner.nn(self.refs)
        name = fresh_name(f"_{scan.cls}{_singular(scan.attr)}Step", self.taken)
        self.taken.add(name)
        self.name = name
        self.top = index.top_index(plan.loop)
        for span in scan.element_uses:
            node = index.find(span)
            tr.replace[id(node)] = lambda u: cst.Attribute(cst.Name("self"), cst.Name("layer"))
        for value in scan.shared:
            for span in value.uses:
                node = index.find(span)
                tr.replace[id(node)] = (lambda a: lambda u: cst.Attribute(cst.Name("self"), cst.Name(a)))(value.attr)
        tr.loops[id(loop)] = self._build

    def _build_direct(self, original: cst.For, loop: cst.For) -> list[cst.BaseStatement]:
        plan, scan = self.plan, self.plan.torch_layers
        carries = list(plan.carries)
        layers = scan.iterable
        if layers.startswith("reversed(") and layers.endswith(")"):
            # scan_layers reads its first layer, then iterates the layers again: a list, not an iterator
            inner = layers[len("reversed("):-1]
            layers = f"{inner}[::-1]" if is_atomic(inner) or inner.endswith(("]", ")")) else f"({inner})[::-1]"
        carry = carries[0] if len(carries) == 1 else f"({', '.join(carries)})"
        pure = ", is_layer_pure=True" if scan.pure else ""
        lhs = carries[0] if len(carries) == 1 else ", ".join(carries)
        call = parse_stmt(f"{lhs} = {self.scan_layers}({layers}, {carry}{pure})\n", self.module)
        call = call.with_changes(leading_lines=loop.leading_lines)
        self.tr.written.add(id(call))
        return [call]

    def _build(self, original: cst.For, loop: cst.For) -> list[cst.BaseStatement]:
        plan, module = self.plan, self.module
        scan = plan.torch_layers
        carries = list(plan.carries)
        body = block_statements(loop.body)
        items = self._items(original, body) if scan.outputs else []
        init_params = "".join(f", {v.attr}" for v in scan.shared)
        init_lines = ["super().__init__()", "self.layer = layer"]
        for v in scan.shared:
            if v.tensor:
                init_lines.append(f'self.register_buffer("{v.attr}", {v.attr}, persistent=False)')
            else:
                init_lines.append(f"self.{v.attr} = {v.attr}")
        init_body = "".join(f"        {line}\n" for line in init_lines)
        runner = "`scan`" if scan.outputs else "`scan_layers`"
        doc = (f'"""One step of the loop over `self.{scan.attr}` in `{plan.function}`, for {runner}."""')
        text = (f"class {self.name}({self.nn}.Module):\n"
                f"    {doc}\n\n"
                f"    def __init__(self, layer{init_params}):\n{init_body}\n"
                f"    def forward(self, {', '.join(carries)}):\n"
                "        pass\n")
        if scan.outputs:
            torch = self.owner.torch(self.refs)
            text += ("\n    @staticmethod\n"
                     "    def stacked_states(steps):\n"
                     '        """The parameters and buffers of `steps`, stacked along a new first axis (the stack '
                     "is\n        differentiable: gradients reach every layer's own parameters).\"\"\"\n"
                     "        states = [{**dict(s.named_parameters()), **dict(s.named_buffers())} for s in steps]\n"
                     f"        return {{key: {torch}.stack([state[key] for state in states]) for key in states[0]}}\n")
        cls = parse_stmt(text, module)
        value = cst.Name(carries[0]) if len(carries) == 1 else \
            cst.Tuple([cst.Element(cst.Name(c)) for c in carries], lpar=[], rpar=[])
        if items:
            ys = cst.Name(items[0][0]) if len(items) == 1 else cst.Tuple([cst.Element(cst.Name(n)) for n, _ in items])
            if len(carries) > 1:
                value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            value = cst.Tuple([cst.Element(value), cst.Element(ys)], lpar=[], rpar=[])
        ret = cst.SimpleStatementLine([cst.Return(value=value)])
        if isinstance(loop.body, cst.IndentedBlock):
            block = loop.body.with_changes(body=[*body, ret], header=cst.TrailingWhitespace())
        else:
            block = cst.IndentedBlock(body=[*body, ret])
        members = list(cls.body.body)
        at = 2  # the docstring, `__init__`, then `forward`
        members[at] = members[at].with_changes(body=block)
        cls = cls.with_changes(body=cls.body.with_changes(body=members), leading_lines=[])
        self.tr.top_defs.setdefault(self.top, []).append(((plan.loop.line, plan.loop.col), cls))
        args = "".join(f", {v.expr}" for v in scan.shared)
        layers = f"[{self.name}({scan.element}{args}) for {scan.element} in {scan.iterable}]"
        names = ", ".join(carries)
        if scan.outputs:
            lines = self._scan_lines(layers, carries, items)
        elif len(carries) == 1:
            lines = f"{carries[0]} = {self.scan_layers}({layers}, {carries[0]})\n"
        else:
            lines = f"{names} = {self.scan_layers}({layers}, ({names}))\n"
        first, rest = lines.split("\n", 1)  # `steps = [...]`, then `if steps:` with the scan
        out = [parse_stmt(first + "\n", module).with_changes(leading_lines=loop.leading_lines)]
        if rest:
            out.append(parse_stmt(rest, module))
        self.tr.written.update(id(stmt) for stmt in out)
        self.tr.written.update(id(n) for n in _lines_in(out[1:]))
        return out

    def _items(self, original: cst.For, body: list) -> list[tuple[str, Optional[str]]]:
        """Replaces each growth of a tuple in the step's body by its item
        (``None`` where the flag is off); returns ``(item name, the flag's test
        as written in the function)`` for each."""
        code = self.module.code_for_node
        taken = self.taken | set(self.plan.function_names)
        out = []
        originals = block_statements(original.body)
        for o in self.plan.torch_layers.outputs:
            name = fresh_name(f"{o.name}_item", taken)
            taken.add(name)
            stmt = body[o.statement]
            inner = block_statements(stmt.body)[0] if isinstance(stmt, cst.If) else stmt
            value = _grown_item(inner.body[0])
            text = f"{name} = {code(value)}"
            test = None
            if isinstance(stmt, cst.If):
                text += f" if {code(stmt.test)} else None"
                test = code(originals[o.statement].test)
            new = parse_stmt(text + "\n", self.module).with_changes(leading_lines=stmt.leading_lines)
            body[o.statement] = new
            out.append((name, test))
        self.taken |= {n for n, _ in out}
        return out

    def _scan_lines(self, layers: str, carries: list[str], items: list[tuple[str, Optional[str]]]) -> str:
        """``steps = [...]``, then the scan over them under ``if steps:`` (an
        empty list runs no step) and the growth of each tuple by its items."""
        plan, scan = self.plan, self.plan.torch_layers
        taken = self.taken | set(plan.function_names)
        steps = fresh_name("steps", taken)
        step = fresh_name(f"_{_singular(scan.attr).lower()}_step", taken | {steps})
        carry = fresh_name("carry", set())
        stacked = {n: fresh_name(f"{o.name}_items", taken | {steps, step}) for (n, _), o in zip(items, scan.outputs)}
        self.taken |= {steps, step, *stacked.values()}
        args = carry if len(carries) > 1 else f"({carry},)"
        init = carries[0] if len(carries) == 1 else f"({', '.join(carries)})"
        lhs = carries[0] if len(carries) == 1 else f"({', '.join(carries)})"
        ys = ", ".join(stacked.values()) if len(items) == 1 else f"({', '.join(stacked.values())})"
        text = (f"{steps} = {layers}\n"
                f"if {steps}:\n"
                f"    def {step}({carry}, state):\n"
                f"        return {self.functional_call}({steps}[0], state, {args})\n\n"
                f"    {lhs}, {ys} = {self.scan}({step}, {init}, {self.name}.stacked_states({steps}))\n")
        for (name, test), o in zip(items, scan.outputs):
            grow = f"{o.name} += {stacked[name]}.unbind(0)" if o.augmented else \
                f"{o.name} = {o.name} + {stacked[name]}.unbind(0)"
            text += f"    if {test}:\n        {grow}\n" if test is not None else f"    {grow}\n"
        return text


def _lines_in(statements: list[cst.CSTNode]) -> list[cst.SimpleStatementLine]:
    """Every simple statement line inside ``statements``."""
    found: list[cst.SimpleStatementLine] = []

    class _Lines(cst.CSTVisitor):
        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
            found.append(node)

    for stmt in statements:
        stmt.visit(_Lines())
    return found


def _grown_item(small: cst.BaseSmallStatement) -> cst.BaseExpression:
    """``v`` of ``acc += (v,)`` or ``acc = acc + (v,)``."""
    value = small.value
    if isinstance(value, cst.BinaryOperation):
        value = value.right
    return value.elements[0].value


class _TimeStepEmitter(_PlanEmitter):
    """A time loop run with ``torch_xla.experimental.scan.scan``: the step has
    ``lax.scan``'s signature (``(carry, x) -> (carry, y)``); the inputs are
    stepped through along their first axis (``x.movedim(k, 0)``, ``.flip(0)``
    for a reversed loop: the outputs then come in the loop's order).  The step
    closes over no tensor: the parameters of the submodules it calls and the
    tensors it reads from outside ride in the carry, unchanged."""

    def __init__(self, *args, owner: TorchXlaEmitter, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def register(self) -> None:
        owner, refs = self.owner, self.refs
        self.scan = owner.imported(refs, SCAN)
        scan = self.plan.torch_time
        if scan.cells:
            self.functional_call = owner.imported(refs, FUNCTIONAL_CALL)
        super().register()
        for cell in scan.cells:
            for span in cell.calls:
                node = self.index.find(span)
                self.tr.replace[id(node)] = (lambda c: lambda u: self._functional_call(u, c))(cell)

    def _functional_call(self, call: cst.Call, cell) -> cst.BaseExpression:
        code = self.module.code_for_node
        args = [code(a.value) for a in call.args if a.keyword is None]
        kwargs = [f'"{a.keyword.value}": {code(a.value)}' for a in call.args if a.keyword is not None]
        inputs = f"({args[0]},)" if len(args) == 1 else f"({', '.join(args)})"
        parts = [code(call.func), cell.name, inputs]
        if kwargs:
            parts.append("{" + ", ".join(kwargs) + "}")
        return parse_expr(f"{self.functional_call}({', '.join(parts)})", self.module)

    def last_step(self) -> int:
        return -1  # the inputs are flipped for a reversed loop: the outputs come in the loop's order

    def _identity(self, c) -> bool:
        return c.kind == "stack" and c.axis == 0 and not c.flipped

    def _consumer(self, node: cst.BaseExpression, c, name: str) -> cst.BaseExpression:
        seq = f"{name}.flip(0)" if c.flipped else name
        if c.kind == "stack":
            text = seq if c.axis == 0 else f"{seq}.movedim(0, {c.axis})"
        elif c.kind == "len":
            return node
        else:  # index
            text = f"{name}[{c.axis}]"
        expr = parse_expr(text, self.module)
        if getattr(node, "lpar", None):
            expr = expr.with_changes(lpar=node.lpar, rpar=node.rpar)
        return expr

    def _render_xs(self, item) -> str:
        src = item.source_text  # `x` and its axis for `x.unbind(k)` (the analysis has read the call)
        axis = item.axis
        if "\n" in src:
            src = f"({src})"
        base = src if axis == 0 else f"{src}.movedim({axis}, 0)"
        if item.kind == "slice":
            sl = item.slice_text()
            if sl != ":":
                base = f"{base}[{sl}]"
        if self.plan.reverse:
            base = f"{base}.flip(0)"
        return base

    def scan_options(self) -> list[str]:
        return []

    def needs_jnp(self) -> bool:
        return False

    def passed_in_carry(self) -> list[str]:
        scan = self.plan.torch_time
        return [c.name for c in scan.cells] + list(scan.carried)

    def scan_call(self, step: str, carry_init: str, xs_text: Optional[str]) -> tuple[str, str]:
        if xs_text is None:
            raise MappingError("torch_xla's scan needs a tensor to step through")
        return f"{self.scan}({step}, {carry_init}, {xs_text})", ""

    def _build(self, loop: cst.For, step: str, original: cst.For) -> list[cst.BaseStatement]:
        out = super()._build(loop, step, original)
        cells = self.plan.torch_time.cells
        if not cells:
            return out
        lines = [parse_stmt(f"{c.name} = dict(self.{c.attr}.named_parameters())\n", self.module) for c in cells]
        lines[0] = lines[0].with_changes(leading_lines=out[0].leading_lines)
        step_def = out[0].with_changes(leading_lines=[cst.EmptyLine(indent=False)])
        self.tr.step_defs.add(id(step_def))
        out[0] = step_def
        return [self._written(line) for line in lines] + out
