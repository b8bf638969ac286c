"""The scan analysis of one ``for`` loop: a :class:`ScanPlan` or a decline.

:data:`PIPELINE` is the order of the decisions.  Each step either records a
fact on the :class:`LoopAnalysis` (what is iterated, the accumulators, the
carries, the per-step values, the per-step inputs and outputs) or checks the
loop against one rule and raises :class:`Decline`.  The first step that fails
decides the code, so every loop gets exactly one stable explanation.  The
rules live in :mod:`loop2scan.analysis.checks`, one module per code group, each
beside its codes and its valid/invalid examples.

Design notes section 2 is the contract the steps implement.
"""

from __future__ import annotations

import ast
import builtins
from functools import cached_property
from typing import Callable, Iterable, Optional

from ..plan import LoopResult, ScanPlan, XsItem
from . import inputs, outputs, style
from .activity import (
    all_read_names,
    all_written_names,
    collect,
    header_effects,
    reads,
    target_names,
    walk_all,
    walk_body,
    walk_scope,
)
from .kinds import UNKNOWN, ValueFacts
from .checks import (
    candidate,
    carries,
    control_flow,
    framework,
    iteration,
    layer_lists,
    module_stacks,
    pays,
    side_effects,
    static_uses,
    structure,
    torch_layers,
    torch_time,
)
from .checks import outputs as output_checks
from .checks.candidate import NOT_CANDIDATE, NUMPY_LOOP, REWRITTEN, SKIPPED
from .context import FunctionContext, ModuleContext
from .decline import Decline, position
from .flow import Def, ReachingDefinitions
from .iteration import ElementSource, EnumerateIndex, RangeSource
from .symbolic import Lin, to_lin
from .nodes import walk

STATIC_ATTRS = {"shape", "ndim", "dtype", "size", "itemsize", "nbytes"}
STATIC_FUNCS = {"len"}  # isinstance/type would see tracers inside a scan
BUILTIN_NAMES = set(dir(builtins))


class LoopAnalysis:
    """The facts about one loop that the steps of :data:`PIPELINE` share.

    Set along the way: ``iteration`` (what is iterated), ``layer`` (a loop over a
    per-layer parameter list), ``targets`` and ``written`` (names bound by the
    loop header and in the body), ``accs`` (accumulators), ``carries`` and
    ``last_values``, ``live_out``, ``body_rd`` (reaching definitions over one
    iteration), ``tainted`` (names that change every step), ``xs``/``length``/
    ``reverse``/``index_info`` (per-step inputs) and ``ys`` (per-step outputs)."""

    def __init__(self, mctx: ModuleContext, loop: ast.AST) -> None:
        self.mctx = mctx
        self.loop = loop
        self.func = mctx.enclosing_function(loop)
        self.written: set[str] = set()
        self.targets: set[str] = set()
        self.layer = None
        self.cells: list = []  # NNX submodules the step carries (Flax target: recurrent cells)
        self.torch_cells: list = []  # torch submodules whose parameters the step carries (torch_xla target)
        self.torch_time = None  # the torch_xla target's facts of a time loop (checks.torch_time)
        self.iteration = None
        self.accs: dict = {}
        self.carries: list[str] = []
        self.last_values: list[str] = []
        self.live_out: set[str] = set()
        self.tainted: set[str] = set()
        self.index_tainted: set[str] = set()
        self.element_tainted: set[str] = set()
        self.context = None  # where the function runs (checks.pays.plan_context)
        self.hoisted: Optional[list[str]] = None  # the step's form (ScanPlan.hoisted)
        self.nested_in: Optional[ast.AST] = None  # the rewritten loop whose step holds this one

    @cached_property
    def fctx(self) -> Optional[FunctionContext]:
        return self.mctx.function(self.func) if self.func is not None else None

    @cached_property
    def facts(self) -> Optional[ValueFacts]:
        return ValueFacts(self.fctx) if self.fctx is not None else None

    # ------------------------------------------------------------------ api
    def run(self) -> LoopResult:
        loop = self.loop
        span = self.mctx.span(loop)
        try:
            if candidate.has_skip_comment(self):
                return LoopResult(span.line, span.col, span.end_line, "skipped", SKIPPED,
                                  "skipped by `# loop2scan: skip`")
            if self.mctx.framework == "flax":
                attr = module_stacks.stack_attribute(self)
                if attr is not None:
                    return self.run_module_stack(attr)
            if self.mctx.framework == "torch_xla":
                built = torch_layers.builds_modules(self)
                if built is not None:
                    return LoopResult(span.line, span.col, span.end_line, "not-candidate", NOT_CANDIDATE, built)
                attr = torch_layers.layer_attribute(self)
                if attr is not None:
                    return self.run_torch_layers(attr)
            has_evidence = candidate.evidence(self) is not None
            host = candidate.numpy_loop(self) if self.mctx.framework is not None and (
                has_evidence or candidate.calls_numpy(self)) else None
            if host is not None:
                return LoopResult(span.line, span.col, span.end_line, "not-candidate", NUMPY_LOOP, host)
            if not has_evidence:
                return LoopResult(span.line, span.col, span.end_line, "not-candidate", NOT_CANDIDATE,
                                  candidate.not_candidate_reason(self))
            self.mctx.ensure_parents(self.func if self.func is not None else loop)
            for step in PIPELINE:
                step(self)
            plan = self.plan()
            style.finish_plan(self, plan)  # the step's role, the discard name, notes
            if plan.torch_time is not None:
                torch_time.finish_plan(plan, self.mctx.policy.assume_pure)
        except Decline as d:
            return self.declined(d)
        target = module_stacks.SCANNED_AS if plan.cells else torch_time.SCANNED_AS if plan.torch_time else None
        return LoopResult(span.line, span.col, span.end_line, "rewritten", REWRITTEN, self.summary(plan), plan,
                          target=target)

    def declined(self, d: Decline) -> LoopResult:
        span = self.mctx.span(self.loop)
        message, where = self._located(d)
        return LoopResult(span.line, span.col, span.end_line, "declined", d.code, message, where=where)

    def _located(self, d: Decline):
        """A decline's message and the span of its construct (``None``, and the
        module named in the message, for a construct in another module)."""
        if d.module is not None and d.module is not self.mctx:
            return f"{d.message} (in {d.module.display_path()}, line {getattr(d.node, 'lineno', '?')})", None
        where = self.mctx.span(d.node) if d.node is not None and hasattr(d.node, "lineno") else None
        return d.message, where

    def start_layer_loop(self, plan_layers: Callable[[], object], extend: bool = False):
        """The steps every loop over a list of modules starts with: the loop's
        form, its names, what it iterates, the body's control flow and effects,
        then the target's own rules (``plan_layers``, whose facts are returned),
        the loop variables and the accumulators (``extend``: tuples growing per
        step, possibly under an ``if``, are accumulators too)."""
        self.mctx.ensure_parents(self.func)
        structure.check_loop_form(self)
        self.find_names()
        iteration.find_iteration(self)
        _body(self)
        control_flow.check_globals(self)
        facts = plan_layers()
        iteration.check_loop_variables(self)
        output_checks.find_accumulators(self, extend=extend)
        return facts

    def run_module_stack(self, attr: str) -> LoopResult:
        """A loop over a stack of NNX modules (``checks.module_stacks``): its own
        rules, then the general steps for the body, the carries, the per-layer
        outputs and where the method runs.  The plan scans the stacked module's
        layers as the loop's elements."""
        span = self.mctx.span(self.loop)
        try:
            modules = self.start_layer_loop(lambda: module_stacks.plan_module_loop(self, attr))
            side_effects.check_mutations(self)
            self.find_carries()
            if not self.carries:
                raise Decline("L2S322", "nothing flows from one layer to the next (no name is read before it is "
                              "written in the body)", self.loop)
            for name in self.carries:
                carries._check_carry_init(self, name)
            carries._check_python_container_carries(self, self.carries)
            carries._check_python_number_carries(self, self.carries)
            self.find_tainted()
            reverse = module_stacks.is_reversed(self.loop.iter)  # `reversed(self.layers)`: the last layer first
            stack = self.loop.iter.args[0] if reverse else self.loop.iter
            self.xs = [XsItem("elements", bind=modules.element, source=self.mctx.span(stack),
                              source_text=self.mctx.source(stack))]
            self.xs_tree = 0
            self.index_info = None
            self.reverse, self.length, self.length_reason = reverse, None, ""
            self.elements_target = self.loop.target
            self.counter = None
            outputs.plan_outputs(self)
            if modules.keep and self.ys:
                raise Decline("L2S322", f"`{self.ys[0].name}` is collected per layer, and with `--layout keep` the "
                              "scan runs only when the list has layers (its first layer gives the structure of "
                              "the stacked module): with none, the collected value would have no value at all; "
                              "the default `--layout stacked` handles it", self.loop)
            pays.plan_context(self)
            plan = self.plan()
            plan.modules = modules
            plan.role = "layer"
            plan.discard = style.discard_name(self, plan)
            plan.notes.append(modules.describe())
            if not modules.keep:
                ctor = modules.build.constructor.split("(", 1)[0]
                plan.assumptions.append(f"`{ctor}(...)` builds the same module whatever the call, apart from drawing "
                                        f"from `{modules.build.rngs}`: the stacked construction runs it once, under "
                                        "`nnx.vmap`, for every layer")
        except Decline as d:
            return self.declined(d)
        return LoopResult(span.line, span.col, span.end_line, "rewritten", REWRITTEN, self.summary(plan), plan,
                          target=module_stacks.SCANNED_AS)

    def run_torch_layers(self, attr: str) -> LoopResult:
        """A loop over a list of torch layers (``checks.torch_layers``): the
        torch rules for the list, the layer's code and the body, then the
        general steps for the loop form, the carries and what is live after
        the loop.  The plan runs the loop's own iterable with ``scan_layers``."""
        span = self.mctx.span(self.loop)
        try:
            return self._torch_layers(attr, span)
        except Decline as d:
            result = self.declined(d)
            result.blockers = [self.blocker(b) for b in torch_layers.all_blockers(self, attr, d)]
            return result

    def blocker(self, d: Decline) -> dict:
        """One blocker of a declined loop, for reports: its code, message and line."""
        message, where = self._located(d)
        return {"code": d.code, "message": message, "line": where.line if where is not None else None}

    def _torch_layers(self, attr: str, span) -> LoopResult:
        """The steps of :meth:`run_torch_layers` (a decline propagates)."""
        scan = self.start_layer_loop(lambda: torch_layers.plan_layer_loop(self, attr), extend=True)
        torch_layers.check_collected(self)
        side_effects.check_mutations(self)
        self.find_carries()
        if not self.carries:
            raise Decline("L2S332", "nothing flows from one layer to the next (no name is read before it is "
                          "written in the body)", self.loop)
        if self.last_values:
            raise Decline("L2S332", f"`{self.last_values[0]}` is computed in the body and read after the loop; "
                          "`scan_layers` returns only the carry", self.loop)
        for name in self.carries:
            carries._check_carry_init(self, name)
        torch_time.check_float_carries(self, self.carries, "is carried from layer to layer")
        self.find_tainted()
        self.xs, self.ys, self.xs_tree, self.index_info = [], [], None, None
        self.reverse, self.length, self.length_reason = False, None, ""
        self.elements_target = self.loop.target
        self.counter = None
        plan = self.plan()
        scan.outputs = torch_layers.layer_outputs(self)
        scan.shared = torch_layers.shared_values(self, scan, plan.broadcast)
        scan.direct = not scan.shared and not scan.outputs and torch_layers.is_direct_call(self, scan.element)
        scan.assume_pure = self.mctx.policy.assume_pure
        scan.pure = scan.direct and scan.assume_pure
        plan.torch_layers = scan
        plan.hoisted = []  # the adapter module is defined once, at module level
        plan.role = "layer"
        plan.notes.append(scan.describe())
        runner = "`scan`" if scan.outputs else "`scan_layers`"
        plan.assumptions = [
            f"`{c}` is a floating-point tensor (or a tuple of them): {runner} traces its carry with "
            "gradients" for c in self.carries]
        if not scan.outputs:  # `scan` runs the first step module itself; `scan_layers` runs a copy
            plan.assumptions += [
                f"`{v.expr}` needs no gradient, or is a leaf tensor: `scan_layers` copies the first step module, "
                "and a computed tensor that needs gradients cannot be copied"
                for v in scan.shared if v.tensor and not torch_time.needs_no_gradient(self, v.expr)]
        return LoopResult(span.line, span.col, span.end_line, "rewritten", REWRITTEN, self.summary(plan), plan,
                          target=torch_layers.SCANNED_WITH_OUTPUTS if scan.outputs else torch_layers.SCANNED_AS)

    # -------------------------------------------------------- fact steps
    def find_names(self) -> None:
        """The names the loop header binds and the names the body writes."""
        self.targets = set(target_names(self.loop.target))
        self.written = all_written_names(self.loop.body)
        self.live_out = self.fctx.liveness.live_after.get(id(self.loop), set())

    def find_carries(self) -> None:
        """Carries (read before written in an iteration, or conditionally written
        and live after the loop) and last values (written every step, live after)."""
        loop, fctx = self.loop, self.fctx
        body_rd, exposed, definitely = self.body_dataflow()
        self.body_rd = body_rd
        trip_min = self.trip_count_at_least_one()
        for name in self.ordered(self.written - self.targets - set(self.accs)):
            if name in exposed:
                self.carries.append(name)
            elif name in self.live_out:
                defs = fctx.defs_before(loop, name)
                bound_before = bool(defs) and not any(d.kind in ("undef", "del") for d in defs)
                if name not in definitely or (bound_before and not trip_min):
                    self.carries.append(name)
                else:
                    self.last_values.append(name)

    def find_tainted(self) -> None:
        """Names whose value changes from step to step: the loop variables, the
        carries, and everything computed from them in the body.  Also, apart,
        the names computed from the loop index (a Python ``int`` in the loop) and
        from the elements of iterated sequences."""
        index, elements = set(), set()
        for leaf in self.iteration.leaves:
            if isinstance(leaf, (RangeSource, EnumerateIndex)):
                index |= set(target_names(leaf.target)) if not isinstance(leaf, RangeSource) else {leaf.name}
            elif isinstance(leaf, ElementSource):
                elements |= set(target_names(leaf.target))
        self.tainted = self._derived(set(self.targets) | set(self.carries))
        self.index_tainted = self._derived(index & self.targets, _integer_arithmetic) - {"_"}
        self.element_tainted = self._derived(elements & self.targets) - {"_"}

    def _derived(self, seed: set[str], through=None) -> set[str]:
        """``seed`` and every name the body computes from them (only through
        expressions ``through`` accepts, when given)."""
        tainted = set(seed)
        stmts = self.body_statements()
        comprehensions = [n for n in walk_all(self.loop.body) if isinstance(n, ast.comprehension)]
        changed = bool(tainted)
        while changed:
            changed = False
            for comp in comprehensions:
                if self.value_reads(comp.iter) & tainted:
                    new = set(target_names(comp.target)) - tainted
                    if new:
                        tainted |= new
                        changed = True
            for stmt in stmts:
                if isinstance(stmt, (ast.For, ast.AsyncFor)):
                    if self.value_reads(stmt.iter) & tainted:
                        new = set(target_names(stmt.target)) - tainted
                        if new:
                            tainted |= new
                            changed = True
                    continue
                eff = header_effects(stmt)
                if not eff.writes:
                    continue
                if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    if through is not None and not through(stmt.value):
                        continue
                    src = self.value_reads(stmt.value)
                    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                        src.add(stmt.target.id)
                else:
                    src = {n.id for n in eff.reads} | eff.closure_reads
                if src & tainted:
                    new = set(eff.writes) - tainted
                    if new:
                        tainted |= new
                        changed = True
        return tainted

    def broadcast_names(self) -> list[str]:
        """The values of the function the step reads (neither carried nor per step)."""
        step_reads = self.step_reads(self.xs)
        return [n for n in self.ordered_reads(step_reads)
                if n not in self.written and n not in self.targets and n not in self.accs and self.is_value_name(n)]

    def plan(self) -> ScanPlan:
        loop, mctx, fctx = self.loop, self.mctx, self.fctx
        reads_in_body = all_read_names(loop.body)
        step_reads = self.step_reads(self.xs)
        broadcast = self.broadcast_names()
        return ScanPlan(
            loop=mctx.span(loop),
            function=mctx.qualified_function_name(self.func),
            carries=self.carries,
            carry_inits={c: c for c in self.carries},
            xs=self.xs,
            ys=self.ys,
            broadcast=broadcast,
            reverse=self.reverse,
            length=self.length,
            length_reason=self.length_reason,
            target_text=mctx.source(loop.target),
            target_pattern=mctx.span(loop.target),
            elements_pattern=inputs.elements_pattern(self, self.iteration, self.xs),
            function_names=set(fctx.all_names) | mctx.module_names | reads_in_body | {c.name for c in self.cells},
            step_reads=step_reads,
            xs_tree=self.xs_tree,
            local_names=set(fctx.locals),
            layout=layer_lists.layout_change(self),
            counter=self.counter,
            assumptions=self.assumptions(),
            dtype_assumed=self.dtype_assumed(),
            context=self.context,
            hoisted=self.hoisted,
            cells=list(self.cells),
            torch_time=self.torch_time,
            nested_in=(mctx.span(self.nested_in).line, mctx.span(self.nested_in).col)
            if self.nested_in is not None else None,
        )

    # ------------------------------------------------------------ assumptions
    def _at_loop(self, name: str):
        return self.facts.name_kind(name, self.fctx.defs_before(self.loop, name) or None)

    def assumptions(self) -> list[str]:
        """What the rewrite relies on that the code does not show
        (``docs/assumptions.md``): values of unknown kind taken for JAX arrays,
        sequences stacked with ``jnp.asarray``, calls out of sight taken for pure."""
        out: list[str] = []
        for name in self.carries:
            kind = self._at_loop(name)
            if kind.tag == UNKNOWN:
                out.append(f"`{name}` is a JAX array (or a pytree of them) whose dtype matches the loop body's: "
                           "nothing shows its kind")
        for item in self.xs:
            if item.kind in ("elements", "slice") and item.wrap_asarray:
                out.append(f"`{item.source_text}` is an array, or a list of arrays of one shape and dtype "
                           "(the scan stacks it with `jnp.asarray`)")
        opaque = []
        # the layers of a stack are scanned as modules, their state changes written back
        layers = self.targets if module_stacks.stack_attribute(self) is not None else set()
        for node in walk_all(self.loop.body):
            if isinstance(node, ast.Call):
                q = self.qual(node.func)
                if q is not None or self.visible_function(node.func) is not None:
                    continue
                if isinstance(node.func, ast.Name) and (node.func.id in BUILTIN_NAMES
                                                        or node.func.id in self.mctx.module_classes):
                    continue
                if isinstance(node.func, ast.Attribute):
                    continue  # methods of values: array methods, or judged by the kind rules
                if isinstance(node.func, ast.Name) and node.func.id in layers:
                    continue
                text = ast.unparse(node.func)
                if text not in opaque:
                    opaque.append(text)
        if opaque:
            names = ", ".join(f"`{t}`" for t in opaque[:3]) + (" ..." if len(opaque) > 3 else "")
            one = len(opaque) == 1
            out.append(f"{names} {'is a pure function' if one else 'are pure functions'} of "
                       f"{'its' if one else 'their'} arguments (the source is not visible)")
        return out

    def dtype_assumed(self) -> bool:
        """Some carry's dtype is not visible in the code."""
        for name in self.carries:
            kind = self._at_loop(name)
            if not kind.dtype.known and not kind.dtype.sources and not kind.dtype.weak:
                return True
        return False

    # ---------------------------------------------------------------- helpers
    def learn_step_arrays(self, xs: list[XsItem]) -> None:
        """Tell the array inference what the step function will see: per-step
        slices and per-step inputs bound to a plain name are arrays."""
        replaced = {span for item in xs for span in item.replaces}
        for node in walk_all(self.loop.body):
            if isinstance(node, ast.Subscript) and self.mctx.span(node) in replaced:
                self.facts.known_nodes.add(id(node))
        for item in xs:
            if item.bind.isidentifier():
                self.facts.known_names.add(item.bind)

    def step_reads(self, xs: list[XsItem]) -> set[str]:
        """Names the step function reads once index reads became slices."""
        replaced = {x_span for item in xs for x_span in item.replaces}
        replaced |= {span for cell in self.cells for span in cell.uses}  # `self.cell`: the carried `cell`
        dropped = {d_span for item in xs for d_span in item.drop}
        skip: set[int] = set()
        for stmt in self.loop.body:
            for node in walk(stmt):
                if (isinstance(node, (ast.Subscript, ast.Attribute)) and self.mctx.span(node) in replaced) or \
                        (isinstance(node, ast.stmt) and self.mctx.span(node) in dropped):
                    skip.update(id(n) for n in walk(node))
        out: set[str] = set()
        for stmt in self.loop.body:
            c = collect(stmt)
            out.update(n.id for n in c.loads if id(n) not in skip)
            out |= c.closure_reads
        return out

    def visible_function(self, func: ast.AST) -> Optional[tuple[ast.AST, ModuleContext]]:
        """The definition a call of ``func`` reaches, where its source is visible:
        a function defined in the enclosing function, one of this module, or one
        imported from another module of the project."""
        if isinstance(func, ast.Name):
            if func.id in self.fctx.locals:
                local = next((n for n in walk_body(self.func) if isinstance(n, (ast.FunctionDef,
                                                                                 ast.AsyncFunctionDef))
                              and n.name == func.id), None)
                return (local, self.mctx) if local is not None else None
            fn = self.mctx.module_functions.get(func.id)
            if fn is not None:
                return fn, self.mctx
        return self.mctx.imported_function(func, self.fctx.imports, self.fctx.shadowing)

    def value_reads_in_body(self) -> set[str]:
        """Every name the loop body reads (nested definitions included)."""
        return all_read_names(self.loop.body)

    def inside_loop(self, node: ast.AST) -> bool:
        return any(a is self.loop for a in self.mctx.ancestors(node))

    def ordered(self, names: Iterable[str]) -> list[str]:
        """Names in order of first appearance in the loop body."""
        names = set(names)
        order: list[str] = []
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                n = node.id if isinstance(node, ast.Name) else None
                if n in names and n not in order:
                    order.append(n)
        order += sorted(names - set(order))
        return order

    def ordered_reads(self, names: set[str]) -> list[str]:
        return [n for n in self.ordered(names) if n in names]

    def is_value_name(self, name: str) -> bool:
        fctx = self.fctx
        if name in fctx.locals:
            return True
        if name in self.mctx.module_functions or name in BUILTIN_NAMES and name not in self.mctx.module_names:
            return False
        if self.mctx.imports.lookup(name) is not None:
            return False
        for stmt in self.mctx.tree.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return False
        if name in self.mctx.module_names:
            return True
        # a name of an enclosing function
        for anc in self.mctx.ancestors(self.func):
            if isinstance(anc, (ast.FunctionDef, ast.AsyncFunctionDef)) and name in self.mctx.function(anc).locals:
                return True
        return False

    def first_write(self, name: str) -> Optional[ast.AST]:
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
                    return node
        return None

    def qual(self, expr: ast.AST) -> Optional[str]:
        return self.facts.qual(expr)

    def is_progress_bar(self, call: ast.Call) -> bool:
        q = self.qual(call.func)
        if q and (q.split(".")[0] in ("tqdm", "rich", "alive_progress", "progressbar") or "progress" in q.lower()):
            return True
        return isinstance(call.func, ast.Name) and call.func.id in ("tqdm", "trange")

    def body_dataflow(self):
        """Reaching definitions over one iteration of the body: which names are
        read before being written (carried), and which are written on every path."""
        rd = ReachingDefinitions()
        entry = {}
        for name in self.written | self.targets:
            entry[name] = frozenset((Def(name, None, "entry"),))
        for name in self.targets:
            entry[name] = frozenset((Def(name, self.loop, "for"),))
        end = rd.run(self.loop.body, entry)
        exposed: set[str] = set()
        for stmt in self.body_statements():
            state = rd.before.get(id(stmt), {})
            eff = header_effects(stmt)
            names = {n.id for n in eff.reads} | eff.closure_reads
            if isinstance(stmt, ast.Match):
                names |= {n.id for c in stmt.cases for n in reads(c.guard)} if stmt.cases else set()
            for name in names & self.written:
                if any(d.kind == "entry" for d in state.get(name, ())):
                    exposed.add(name)
        definitely: set[str] = set()
        if end is not None:
            for name in self.written:
                if not any(d.kind == "entry" for d in end.get(name, ())):
                    definitely.add(name)
        return rd, exposed, definitely

    def body_statements(self) -> list[ast.stmt]:
        """Every statement of the body, nested blocks included (not the bodies of
        nested definitions)."""
        return [node for stmt in self.loop.body for node in walk_scope(stmt) if isinstance(node, ast.stmt)]

    def value_reads(self, expr: Optional[ast.AST]) -> set[str]:
        """Names whose *values* an expression uses (reads under ``.shape``,
        ``len()`` and friends only see static metadata)."""
        if expr is None:
            return set()
        skip: set[int] = set()
        for node in walk(expr):
            if isinstance(node, ast.Attribute) and node.attr in STATIC_ATTRS:
                skip.update(id(n) for n in walk(node.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in STATIC_FUNCS:
                for a in node.args:
                    skip.update(id(n) for n in walk(a))
        return {n.id for n in reads(expr) if id(n) not in skip}

    def summary(self, plan: ScanPlan) -> str:
        parts = [f"carry: {', '.join(plan.carries) or '(none)'}"]
        if plan.modules is not None:
            parts.insert(0, f"the layers of self.{plan.modules.attr} as {plan.modules.element} (one stacked module)")
        if plan.cells:
            # NNX submodules the step carries (`nnx.Carry`)
            parts.insert(0, "carried modules: " + ", ".join(f"{c.expr} as {c.name}" for c in plan.cells))
        if plan.xs and plan.modules is None:
            parts.append(f"xs: {'; '.join(x.describe() for x in plan.xs)}")
        if plan.ys:
            parts.append(f"ys: {', '.join(y.name for y in plan.ys)}")
        if plan.reverse:
            parts.append("reverse")
        if plan.torch_time is not None and plan.torch_time.cells:
            parts.insert(0, "modules: " + ", ".join(f"self.{c.attr}" for c in plan.torch_time.cells))
        return ("nnx.scan" if plan.cells or plan.modules else "scan") + " with " + "; ".join(parts)

    def trip_count_at_least_one(self) -> bool:
        r = self.iteration.range_loop
        if r is None:
            return False
        start = to_lin(r.start, lambda n: None) if r.start is not None else Lin.constant(0)
        stop = to_lin(r.stop, lambda n: None)
        step = to_lin(r.step, lambda n: None) if r.step is not None else Lin.constant(1)
        if start is None or stop is None or step is None or not (start.is_const and stop.is_const and step.is_const):
            return False
        return len(range(start.const, stop.const, step.const or 1)) >= 1 if step.const else False

    def array_at_loop(self, expr: ast.AST) -> bool:
        return self.facts.is_array(expr, lambda n: self.fctx.defs_before(self.loop, n) or None)


def _integer_arithmetic(expr: Optional[ast.AST]) -> bool:
    """Python arithmetic that keeps an ``int`` a Python number (``2 * t + 1``,
    ``min(t, n)``), as opposed to array operations on it (``xs[t]``, ``jnp.sin(t)``)."""
    if expr is None:
        return False
    for node in walk(expr):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in ("min", "max", "abs", "int", "round",
                                                                          "divmod", "len", "pow")):
                return False
        elif isinstance(node, (ast.Subscript, ast.Attribute, ast.Lambda, ast.ListComp, ast.GeneratorExp,
                               ast.DictComp, ast.SetComp, ast.JoinedStr, ast.Dict, ast.List, ast.Set)):
            return False
    return True


def _body(la: LoopAnalysis) -> None:
    """Control flow and side effects in the body: the first construct in source
    order decides, whichever group it belongs to."""
    problems = control_flow.body_problems(la) + side_effects.body_problems(la)
    if problems:
        raise min(problems, key=lambda d: (position(d.node), d.code))


Step = Callable[[LoopAnalysis], None]

#: The decisions, in order (after the suppression comment and the array evidence
#: of :mod:`.checks.candidate`).  A step named ``find_*`` or ``plan_*`` records facts
#: (and may decline when they cannot be established); ``check_*`` steps only decline.
PIPELINE: tuple[Step, ...] = (
    framework.check_framework,          # L2S601, L2S602: the target handles this framework
    structure.check_loop_form,          # L2S010-L2S014: async, module level, for-else, frame access
    LoopAnalysis.find_names,            # loop variables, names written, names live after the loop
    iteration.find_iteration,           # range / zip / enumerate / reversed / elements (L2S013, L2S302)
    layer_lists.find_layer_loop,        # loops over per-layer parameter lists (L2S304, L2S308, L2S309)
    iteration.check_iterables,          # what is iterated can be scanned (L2S302-L2S304, L2S307)
    _body,                              # L2S101-L2S112, L2S201-L2S205: the first construct in the body
    control_flow.check_globals,         # L2S106: global/nonlocal names used in the loop
    iteration.check_loop_variables,     # L2S305, L2S306: loop variables rebound or read after the loop
    side_effects.check_closures,        # L2S206: functions defined outside read names the loop changes
    side_effects.check_stateful_objects,  # L2S207: modules, optimizers, RNG streams, references
    output_checks.find_accumulators,    # list/tuple/.at[].set outputs (L2S501, L2S502)
    side_effects.check_mutations,       # L2S205: other in-place list changes
    LoopAnalysis.find_carries,          # carries and last values
    carries.check_initial_values,       # L2S401-L2S403: carries bound, not None, arrays
    LoopAnalysis.find_tainted,          # names that change every step
    control_flow.check_branches,        # L2S109 (L2S307): Python control flow on per-step values
    static_uses.check_static_uses,      # L2S307, L2S311: per-step values where Python values are needed
    side_effects.check_conversions,     # L2S202: per-step values turned into Python/NumPy values
    iteration.check_elements,           # L2S310: the iterated sequences hold arrays
    carries.check_shapes,               # L2S404: carries keep their shape and structure
    carries.check_dtypes,               # L2S405: carries keep their dtype
    iteration.check_trip_count,         # L2S301: the number of steps is static
    inputs.plan_inputs,                 # per-step inputs, trip count, direction (L2S301, L2S307, L2S309)
    outputs.plan_outputs,               # per-step outputs
    pays.check_short_loop,              # L2S701: a small constant trip count
    pays.check_unrolled_on_purpose,     # L2S703: unroll remainders, loops beside lax loops, test references
    pays.plan_context,                  # L2S702: traced (closure step) or eager (step defined once) or declined
                                        # (torch_xla: checks.torch_time.plan_time_scan, L2S334, L2S335)
)


def analyze_module(mctx: ModuleContext) -> list[LoopResult]:
    """Analyse every ``for`` loop of a module, in source order."""
    if candidate.SKIP_FILE_RE.search(mctx.text):
        out = []
        for loop in mctx.loops:
            s = mctx.span(loop)
            out.append(LoopResult(s.line, s.col, s.end_line, "skipped", SKIPPED,
                                  "skipped by `# loop2scan: skip-file`"))
        return out
    results = [mctx.first_pass_result(loop) for loop in mctx.loops]
    inputs.inputs_of_enclosing_steps(mctx, results)
    layer_lists.layouts_change_together(mctx, results)
    pays.nested_steps_rewritten(results)
    module_stacks.mark_build_loops(results)
    style.name_steps(mctx, results)  # distinct step names per function (and module, for module-level steps)
    return results
