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
"""

from __future__ import annotations

import libcst as cst

from loop2scan.analysis.checks.torch_layers import SCANNED_AS
from loop2scan.plan import ScanPlan

from .common import EditTransformer, ImportItem, MappingError, SpanIndex, block_statements, fresh_name, parse_stmt
from .jax_scan import JaxScanEmitter, _Refs

SCAN_LAYERS = ("torch_xla.experimental.scan_layers", "scan_layers")


class TorchXlaEmitter(JaxScanEmitter):
    """Rewrites the planned loops over torch layers of one module."""

    target = SCANNED_AS

    def emits_lax_scan(self, plans: list[ScanPlan], edits) -> bool:
        return False

    def plan_emitter(self, plan: ScanPlan, index: SpanIndex, refs: _Refs, tr: EditTransformer,
                     reserved: set[str], taken: set[str]):
        if plan.torch_layers is None:
            raise MappingError("the torch_xla target rewrites only loops over lists of layers")
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
        qual = ".".join(SCAN_LAYERS)
        for local, q in sorted(self.aliases.items()):
            if q == qual:
                return local
        for local, q in sorted(self.aliases.items()):
            if q == SCAN_LAYERS[0]:
                return f"{local}.scan_layers"
        if "scan_layers" in self.module_names:
            raise MappingError("the module binds the name `scan_layers` to something else")
        _need(refs, ImportItem(*SCAN_LAYERS))
        return "scan_layers"


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
        self.nn = self.owner.nn(self.refs)
        self.scan_layers = self.owner.scan_layers(self.refs)
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

    def _build(self, original: cst.For, loop: cst.For) -> list[cst.BaseStatement]:
        plan, module = self.plan, self.module
        scan = plan.torch_layers
        carries = list(plan.carries)
        body = block_statements(loop.body)
        init_params = "".join(f", {v.attr}" for v in scan.shared)
        init_lines = ["super().__init__()", "self.layer = layer"]
        for v in scan.shared:
            if v.tensor:
                init_lines.append(f'self.register_buffer("{v.attr}", {v.attr}, persistent=False)')
            else:
                init_lines.append(f"self.{v.attr} = {v.attr}")
        init_body = "".join(f"        {line}\n" for line in init_lines)
        doc = (f'"""One step of the loop over `self.{scan.attr}` in `{plan.function}`, for `scan_layers`."""')
        text = (f"class {self.name}({self.nn}.Module):\n"
                f"    {doc}\n\n"
                f"    def __init__(self, layer{init_params}):\n{init_body}\n"
                f"    def forward(self, {', '.join(carries)}):\n"
                "        pass\n")
        cls = parse_stmt(text, module)
        value = cst.Name(carries[0]) if len(carries) == 1 else \
            cst.Tuple([cst.Element(cst.Name(c)) for c in carries], lpar=[], rpar=[])
        ret = cst.SimpleStatementLine([cst.Return(value=value)])
        if isinstance(loop.body, cst.IndentedBlock):
            block = loop.body.with_changes(body=[*body, ret], header=cst.TrailingWhitespace())
        else:
            block = cst.IndentedBlock(body=[*body, ret])
        members = list(cls.body.body)
        forward = members[-1]
        members[-1] = forward.with_changes(body=block)
        cls = cls.with_changes(body=cls.body.with_changes(body=members), leading_lines=[])
        self.tr.top_defs.setdefault(self.top, []).append(((plan.loop.line, plan.loop.col), cls))
        args = "".join(f", {v.expr}" for v in scan.shared)
        layers = f"[{self.name}({scan.element}{args}) for {scan.element} in {scan.iterable}]"
        if len(carries) == 1:
            line = f"{carries[0]} = {self.scan_layers}({layers}, {carries[0]})"
        else:
            names = ", ".join(carries)
            line = f"{names} = {self.scan_layers}({layers}, ({names}))"
        call = parse_stmt(line + "\n", module).with_changes(leading_lines=loop.leading_lines)
        self.tr.written.add(id(call))
        return [call]
