"""Emit ``flax.nnx.scan`` for loops over stacks of NNX modules.

The ``flax`` target is the JAX one (array loops become ``jax.lax.scan``) plus
this: a plan with ``modules`` set (``loop2scan.analysis.checks.module_stacks``)
changes two places of one class.

The constructor's list of layers becomes one stacked module, built by a
factory under ``nnx.vmap`` from one split of the ``nnx.Rngs`` per layer::

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def _make_layers(rngs):
        return Block(cfg, rngs=rngs)

    self.layers = _make_layers(rngs)

and the loop becomes a step over one layer, scanned with the carry marked
``nnx.Carry``::

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def _layer_step(x, layer):
        x = layer(x, mask, deterministic=deterministic)
        return x

    x = _layer_step(x, self.layers)

The step is defined in place of the loop (closing over what it reads) when the
method runs under a transformation; otherwise once, at module level, with the
values it reads passed as broadcast (``None``) arguments, so that an eager call
compiles it once.
"""

from __future__ import annotations

import json
from typing import Optional

import libcst as cst

from loop2scan.plan import ModuleBuild, ScanPlan

from .common import EditTransformer, ImportItem, MappingError, SpanIndex, fresh_name, parse_stmt
from .jax_scan import JaxScanEmitter, _PlanEmitter, _Refs

NNX_MODULES = ("flax.nnx",)


class NnxScanEmitter(JaxScanEmitter):
    """The JAX emitter, with ``nnx.scan`` for the plans over module stacks."""

    def emits_lax_scan(self, plans: list[ScanPlan], edits) -> bool:
        return bool(edits) or any(p.modules is None and not p.cells for p in plans)

    def plan_emitter(self, plan: ScanPlan, index: SpanIndex, refs: _Refs, tr: EditTransformer,
                     reserved: set[str], taken: set[str]):
        if plan.modules is not None or plan.cells:
            return _NnxPlanEmitter(plan, index, refs, tr, reserved, taken, self.style.unroll, owner=self)
        return super().plan_emitter(plan, index, refs, tr, reserved, taken)

    def nnx(self, refs: _Refs) -> str:
        """How this module spells ``flax.nnx`` (``from flax import nnx`` is added when it has none)."""
        for local, qual in sorted(self.aliases.items()):
            if qual in NNX_MODULES:
                return local
        for local, qual in sorted(self.aliases.items()):
            if qual == "flax":
                return f"{local}.nnx"
        if "nnx" in self.module_names:
            raise MappingError("the module binds the name `nnx` to something else than `flax.nnx`")
        item = ImportItem("flax", "nnx")
        if item not in refs.imports:
            refs.imports.append(item)
        return "nnx"


class _NnxPlanEmitter(_PlanEmitter):
    """A plan scanned with ``nnx.scan``: the step has ``lax.scan``'s signature
    (``(carry, x) -> (carry, y)``, or the carry alone when nothing is collected
    per step: ``out_axes=nnx.Carry``), its inputs and outputs on axis 0.

    Loops over a layer stack scan the stacked module (``in_axes`` 0: one layer
    per step), and its construction is rewritten once per class.  Submodules
    the step calls (recurrent cells) are carried first, marked ``nnx.Carry``:
    one set of parameters for every step, RNG streams advancing step by step."""

    def __init__(self, *args, owner: NnxScanEmitter, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def register(self) -> None:
        self.nnx = self.owner.nnx(self.refs)
        super().register()
        for cell in self.plan.cells:
            for span in cell.uses:
                node = self.index.find(span)
                self.tr.replace[id(node)] = (lambda name: lambda u: cst.Name(name))(cell.name)
        modules = self.plan.modules
        if modules is not None and not modules.keep:
            self._register_build(modules.build)
        if modules is not None and modules.keep:
            # the list's states stacked into one module on every call, written back after the scan
            self.stacked = self._fresh(f"stacked_{modules.attr.strip('_') or 'layers'}")
            self.index_name = self._fresh("i")
            self.refs.tree_map, self.refs.jnp  # decide the spellings (and the imports)

    def _render_xs(self, item) -> str:
        modules = self.plan.modules
        if modules is not None and modules.keep:
            return self.stacked
        return super()._render_xs(item)

    def _build(self, loop: cst.For, step: str, original: cst.For) -> list:
        stmts = super()._build(loop, step, original)
        modules = self.plan.modules
        if modules is None or not modules.keep:
            return stmts
        nnx, refs, module, attr = self.nnx, self.refs, self.module, modules.attr
        unit = module.default_indent
        # the loop's own variable names the layers again: the loop bound it in the function's scope too
        # (and nothing reads it after the loop: the analysis checked that)
        stacked, i, layer = self.stacked, self.index_name, modules.element
        make = parse_stmt(
            f"{stacked} = {nnx}.merge(\n"
            f"{unit}{nnx}.graphdef(self.{attr}[0]),\n"
            f"{unit}{refs.tree_map}(lambda *s: {refs.jnp}.stack(s), *[{nnx}.state({layer}) for {layer} in self.{attr}]),\n"
            f")\n", module)
        write_back = parse_stmt(
            f"for {i}, {layer} in enumerate(self.{attr}):\n"
            f"{unit}{nnx}.update({layer}, {refs.tree_map}(lambda s: s[{i}], {nnx}.state({stacked})))\n", module)
        leading = stmts[0].leading_lines
        first = stmts[0].with_changes(leading_lines=[])
        for marks in (self.tr.step_defs, self.tr.written):
            if id(stmts[0]) in marks:
                marks.discard(id(stmts[0]))
                marks.add(id(first))
        stmts[0] = first
        for node in (make, write_back):
            self.tr.written.add(id(node))
        guard = parse_stmt(f"if len(self.{attr}):\n{unit}pass\n", module)
        block = guard.body.with_changes(body=[make, *stmts, write_back])
        guard = guard.with_changes(body=block, leading_lines=leading)
        self.tr.written.add(id(guard))
        return [guard]

    def carry_only(self) -> bool:
        return not self.plan.ys

    def passed_in_carry(self) -> list[str]:
        return []  # a step defined at module level takes them as broadcast (`None`) arguments

    def broadcast_params(self) -> list[str]:
        return list(self.plan.hoisted or ())

    def scan_call(self, step: str, carry_init: str, xs_text: Optional[str]) -> tuple[str, str]:
        nnx = self.nnx
        passed = self.broadcast_params()
        out_axes = f"{nnx}.Carry" if self.carry_only() else f"({nnx}.Carry, 0)"
        in_axes = ", ".join([f"{nnx}.Carry", "0" if xs_text is not None else "None", *["None"] * len(passed)])
        options = ", ".join([f"in_axes=({in_axes})", f"out_axes={out_axes}", *self.scan_options(),
                             *self._metadata()])
        args = ", ".join([carry_init, xs_text if xs_text is not None else "None", *passed])
        return f"{step}({args})", f"@{nnx}.scan({options})\n"

    def _metadata(self) -> list[str]:
        """``transform_metadata=`` naming the stacked axis, where the layers may
        carry sharding metadata (``nnx.with_partitioning``): each partition spec
        of a stacked variable gets the layer axis in front."""
        modules = self.plan.modules
        if modules is None or not modules.build.partitioned:
            return []
        name = self.owner.style.layer_axis_name
        return [f"transform_metadata={{{self.nnx}.PARTITION_NAME: {json.dumps(name)}}}"]

    # ------------------------------------------------------------ construction
    def _register_build(self, build: ModuleBuild) -> None:
        """The statement building the list becomes the factory and one call of it
        (once for the class, however many loops scan the stack)."""
        done = self.tr.__dict__.setdefault("module_builds", set())
        if build.span in done:
            return
        done.add(build.span)
        assign = self.index.find(build.span)
        line = _statement_line(self.module, assign)
        if line is None:
            raise MappingError(f"the statement building `self.{build.attr}` shares its line with others")
        if build.loop_span is not None:
            removed = self.index.find(build.loop_span)
            if not isinstance(removed, cst.For):
                raise MappingError(f"the loop filling `self.{build.attr}` was not found")
            self.tr.loops[id(removed)] = lambda o, u: []
        factory = fresh_name(f"_make_{build.attr.strip('_') or 'layers'}", set(build.names))
        self.tr.loops[id(line)] = lambda o, u: self._build_stack(o, build, factory)

    def _build_stack(self, line: cst.SimpleStatementLine, build: ModuleBuild, factory: str) -> list:
        nnx, module = self.nnx, self.module
        indent = module.default_indent
        vmap_options = ", ".join(["in_axes=(0,)", "out_axes=0", *self._metadata()])
        text = (f"@{nnx}.split_rngs(splits={build.count})\n"
                f"@{nnx}.vmap({vmap_options})\n"
                f"def {factory}({build.rngs}):\n"
                f"{indent}return {build.constructor}\n")
        func = parse_stmt(text, module).with_changes(leading_lines=line.leading_lines)
        assign = parse_stmt(f"self.{build.attr} = {factory}({build.rngs})\n", module).with_changes(
            trailing_whitespace=line.trailing_whitespace)
        for node in (func, assign):
            self.tr.written.add(id(node))
        self.tr.step_defs.add(id(func))  # blank lines around it, as around a step
        return [func, assign]


def _statement_line(module: cst.Module, small: cst.CSTNode) -> Optional[cst.SimpleStatementLine]:
    """The line holding ``small`` alone."""
    found: list = []

    class _Find(cst.CSTVisitor):
        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> Optional[bool]:
            if any(s is small for s in node.body):
                found.append(node)
            return False

    module.visit(_Find())
    if found and len(found[0].body) == 1:
        return found[0]
    return None
