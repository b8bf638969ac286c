"""Emit ``jax.lax.scan`` for the loops the analysis planned.

The emitter follows the plan literally: the loop body becomes a step function
defined in place of the loop (so it closes over the same names), the carries
become its first argument and the first part of its result, the per-step
inputs its second argument, the per-step outputs the second part of its
result; list accumulators are replaced by the stacked outputs, and their uses
after the loop by the equivalent array expression.

Also runnable through libcst's codemod runner (``.libcst.codemod.yaml`` lists
this package)::

    python -m libcst.tool codemod --no-format jax_scan.JaxScanCommand path/
"""

from __future__ import annotations

import io
import tokenize
from typing import Optional, Sequence

import libcst as cst

from loop2scan.plan import LayoutEdit, ScanPlan, Span, XsItem, YsItem, is_atomic
from loop2scan.policy import DEFAULT_STYLE, Style
from loop2scan.versions import JAX_TREE_MODULE

from .common import (
    EditTransformer,
    MappingError,
    SpanIndex,
    ImportItem,
    block_statements,
    fresh_name,
    module_aliases,
    parse_expr,
    parse_stmt,
)
from .fit import FitTransformer, slice_text

TARGET = "jax.lax.scan"

# Where a module may already have `scan`, `jax.numpy` and the tree functions, by qualified name.
# The `jax._src` spellings are what JAX's own modules import (they must not `import jax`).
SCAN_FUNCTIONS = ("jax.lax.scan", "jax._src.lax.control_flow.scan", "jax._src.lax.control_flow.loops.scan",
                  "jax._src.lax.scan")
SCAN_MODULES = ("jax.lax", "jax._src.lax", "jax._src.lax.control_flow", "jax._src.lax.control_flow.loops")
NUMPY_MODULES = ("jax.numpy", "jax._src.numpy", "jax._src.numpy.lax_numpy")
TREE_MODULES = ("jax.tree", "jax._src.tree")  # `.map`, `.leaves`
TREE_UTIL_MODULES = ("jax.tree_util", "jax._src.tree_util")  # `.tree_map`, `.tree_leaves`
VMAP_FUNCTIONS = ("jax.vmap", "jax._src.api.vmap")


def inside_jax(module_name: Optional[str]) -> bool:
    """The module is part of JAX's own source tree."""
    return module_name is not None and (module_name == "jax" or module_name.startswith("jax."))


class _Refs:
    """How this module spells ``jax.lax.scan``, ``jax.numpy`` and the tree
    functions, and which imports must be added for that.  Inside JAX's own
    source tree nothing is imported: only what the module already imports is
    used (an ``import jax`` there would be circular)."""

    def __init__(self, aliases: dict[str, str], module_names: set[str], module_name: Optional[str] = None,
                 jax_version: Optional[tuple[int, ...]] = None, scan: bool = True) -> None:
        self.imports: list = []
        # `jax.tree` came with jax 0.4.25: older targets spell the tree functions `jax.tree_util.tree_*`
        self.tree_module = jax_version is None or jax_version >= JAX_TREE_MODULE
        self._jnp: Optional[str] = None
        self._roots: set[str] = set()
        self.module_name = module_name
        self.in_jax = inside_jax(module_name)
        by_qual: dict[str, list[str]] = {}
        for local, qual in aliases.items():
            by_qual.setdefault(qual, []).append(local)
        self.by_qual = {k: sorted(v) for k, v in by_qual.items()}
        self.module_names = module_names
        self.scan: Optional[str] = None
        if scan:  # `jax.lax.scan` is emitted (not only `nnx.scan`)
            self._resolve_scan()

    def _resolve_scan(self) -> None:
        module_name, module_names = self.module_name, self.module_names
        scan = self._first(SCAN_FUNCTIONS)
        module = self._first(SCAN_MODULES)
        if scan is not None:
            self.scan = scan
        elif module is not None:
            self.scan = f"{module}.scan"
        elif "jax" in self.by_qual:
            self.scan = f"{self.by_qual['jax'][0]}.lax.scan"
        elif self.in_jax:
            raise MappingError(f"the module (`{module_name}`) is inside jax's own source tree and imports no "
                               "scan (`jax.lax` or `jax._src.lax`); loop2scan adds no `import jax` there")
        elif "jax" not in module_names:
            self.scan = "jax.lax.scan"
            self._add("jax")
        else:
            raise MappingError("the module binds the name `jax` to something else")
        self._roots.add(self.scan.split(".")[0])

    def _first(self, quals) -> Optional[str]:
        for q in quals:
            if q in self.by_qual:
                return self.by_qual[q][0]
        return None

    def _add(self, module: str, alias: Optional[str] = None) -> None:
        item = ImportItem(module, alias=alias)
        if all((i.module_name, i.alias) != (module, alias) for i in self.imports):
            self.imports.append(item)

    @property
    def jnp(self) -> str:
        if self._jnp is None:
            found = self._first(NUMPY_MODULES)
            if found is not None:
                self._jnp = found
            elif self.in_jax:
                if "jax" not in self.by_qual:
                    raise MappingError(f"the module (`{self.module_name}`) is inside jax's own source tree and "
                                       "imports no `jax.numpy` (or `jax._src.numpy`); loop2scan adds no imports "
                                       "there")
                self._jnp = f"{self.by_qual['jax'][0]}.numpy"
            elif "jnp" not in self.module_names:
                self._jnp = "jnp"
                self._add("jax.numpy", "jnp")
            else:
                self._jnp = f"{self.scan.split('.')[0]}.numpy" if self.scan.endswith(".lax.scan") else "jax.numpy"
                if self._jnp == "jax.numpy" and "jax" not in self.by_qual:
                    self._add("jax")
            self._roots.add(self._jnp.split(".")[0])
        return self._jnp

    @property
    def jax(self) -> str:
        """How the module spells the ``jax`` package."""
        if "jax" in self.by_qual:
            name = self.by_qual["jax"][0]
        elif self.in_jax:
            raise MappingError(f"the module (`{self.module_name}`) is inside jax's own source tree and does not "
                               "import `jax`; loop2scan adds no imports there")
        elif "jax" in self.module_names:
            raise MappingError("the module binds the name `jax` to something else")
        else:
            self._add("jax")
            name = "jax"
        self._roots.add(name)
        return name

    def _tree(self, new: str, old: str) -> str:
        if not self.tree_module:
            util = self._first(TREE_UTIL_MODULES)
            if util is not None:
                self._roots.add(util)
                return f"{util}.{old}"
            return f"{self.jax}.tree_util.{old}"
        found = self._first(TREE_MODULES)
        if found is not None:
            self._roots.add(found)
            return f"{found}.{new}"
        if "jax" in self.by_qual or not self.in_jax:
            return f"{self.jax}.tree.{new}"
        util = self._first(TREE_UTIL_MODULES)
        if util is not None:
            self._roots.add(util)
            return f"{util}.{old}"
        return f"{self.jax}.tree.{new}"  # raises the inside-jax MappingError

    @property
    def tree_map(self) -> str:
        return self._tree("map", "tree_map")

    @property
    def tree_leaves(self) -> str:
        return self._tree("leaves", "tree_leaves")

    @property
    def vmap(self) -> Optional[str]:
        """``jax.vmap`` as the module can spell it (``None`` inside jax's tree without one)."""
        found = self._first(VMAP_FUNCTIONS)
        if found is not None:
            self._roots.add(found)
            return found
        if "jax" in self.by_qual or not self.in_jax:
            return f"{self.jax}.vmap"
        return None

    def roots(self) -> set[str]:
        return set(self._roots)


class JaxScanEmitter:
    """Rewrites the planned loops of one module (or of one top-level statement
    of it: ``line_offset`` says where that part starts in the file)."""

    target = TARGET

    def __init__(self, module: cst.Module, lines: list[str], module_names: set[str],
                 aliases: Optional[dict[str, str]] = None, line_offset: int = 0,
                 style: Style = DEFAULT_STYLE, module_name: Optional[str] = None,
                 taken: Optional[set[str]] = None) -> None:
        self.module = module
        self.style = style  # line length of emitted code
        self.module_name = module_name  # the module's dotted name, when known (``jax._src.lax`` adds no `import jax`)
        self.lines = lines
        self.module_names = module_names
        self.aliases = aliases if aliases is not None else module_aliases(module)
        self.line_offset = line_offset
        # every name used anywhere in the module, and the module-level steps added so far (shared by the
        # emitters of one file): a step defined at module level takes a name none of them has
        self.taken = taken if taken is not None else set(module_names)
        self.imports: list = []  # libcst ImportItems the rewritten code needs

    def emit(self, plans: list[ScanPlan], edits: Sequence[LayoutEdit] = ()) -> tuple[cst.Module, dict[Span, str]]:
        """Returns the new module and, for plans (keyed by their loop) and
        stand-alone layout edits (keyed by their span) that could not be applied,
        why.  The imports to add are left in ``self.imports``."""
        failures: dict[Span, str] = {}
        if not plans and not edits:
            return self.module, failures
        try:
            refs = _Refs(self.aliases, self.module_names, self.module_name, self.style.jax,
                         scan=self.emits_lax_scan(plans, edits))
        except MappingError as e:
            return self.module, {**{p.loop: str(e) for p in plans}, **{e_.span: str(e) for e_ in edits}}
        index = SpanIndex(self.module, self.lines, self.line_offset)
        tr = EditTransformer()
        for edit in edits:
            # a parameter list whose loops are in another module: its builder or uses here
            try:
                node = index.find(edit.span)
                layout_edit_refs(refs, edit)
            except MappingError as e:
                failures[edit.span] = str(e)
                continue
            tr.replace[id(node)] = (lambda e: lambda u: _marked(tr, layout_edit(self.module, refs, u, e)))(edit)
        if len(failures) == len(edits) and not plans:
            return self.module, failures
        reserved_by_function: dict[str, set[str]] = {}
        for plan in plans:
            reserved = reserved_by_function.setdefault(plan.function, set(plan.function_names))
            trial = EditTransformer()
            taken = set(self.taken)
            try:
                self.plan_emitter(plan, index, refs, trial, set(reserved), taken).register()
            except MappingError as e:
                failures[plan.loop] = str(e)
                continue
            roots = refs.roots()
            if roots & plan.local_names:
                failures[plan.loop] = f"`{sorted(roots & plan.local_names)[0]}` is a local name in this function"
                continue
            reserved |= trial.reserved  # type: ignore[attr-defined]
            self.taken |= taken
            _merge(tr, trial)
        if len(failures) == len(plans) + len(edits):
            return self.module, failures
        module = self.module.visit(tr)
        module = self._place_module_steps(module, tr)
        fit = FitTransformer(module, self.style.line_length, tr.written, tr.written_exprs, tr.step_defs,
                             {id(f) for defs in tr.top_defs.values() for _, f in defs}, self._top_blank())
        module = module.visit(fit)
        self.imports = list(refs.imports)
        return module, failures

    def emits_lax_scan(self, plans: list[ScanPlan], edits: Sequence[LayoutEdit]) -> bool:
        """Some of the plans (or edits) are written with ``jax.lax.scan``."""
        return True

    def plan_emitter(self, plan: ScanPlan, index: SpanIndex, refs: "_Refs", tr: EditTransformer,
                     reserved: set[str], taken: set[str]):
        """The object that registers one plan's edits (``register()``)."""
        return _PlanEmitter(plan, index, refs, tr, reserved, taken, self.style.unroll)

    def _place_module_steps(self, module: cst.Module, tr: EditTransformer) -> cst.Module:
        """The steps defined at module level go right before the top-level
        statement holding their loop (after the blank lines above it; its
        comments and decorators stay with it)."""
        if not tr.top_defs:
            return module
        body = list(module.body)
        if len(body) != len(self.module.body):  # pragma: no cover - top-level statements are never removed
            raise MappingError("the top-level statements changed while rewriting")
        out = []
        header = list(module.header)
        for i, stmt in enumerate(body):
            defs = [f for _, f in sorted(tr.top_defs.get(i, []), key=lambda kv: kv[0])]
            if defs:
                lines = list(stmt.leading_lines)
                if i == 0 and header:
                    # comments opening this part of the file belong to its first statement
                    lines, header = header + lines, []
                blanks = 0
                while blanks < len(lines) and lines[blanks].comment is None:
                    blanks += 1
                n = blanks if blanks else self._top_blank()
                for k, f in enumerate(defs):
                    before = lines[:blanks] if k == 0 else [cst.EmptyLine(indent=False)] * n
                    out.append(f.with_changes(leading_lines=before))
                stmt = stmt.with_changes(leading_lines=[cst.EmptyLine(indent=False)] * n + lines[blanks:])
                # the fit pass finds the placed steps by identity
                tr.top_defs[i] = [(0, o) for o in out[-len(defs):]]
            out.append(stmt)
        return module.with_changes(body=out, header=header)

    def _top_blank(self) -> int:
        """Blank lines between top-level definitions, as the file has them above
        this part (two when it shows none)."""
        n = 0
        i = self.line_offset - 1
        while i >= 0 and self.lines[i].strip() == "":
            n += 1
            i -= 1
        return n if n and i >= 0 else 2


def _one_line(code: str) -> str:
    """A multi-line expression on one line, its tokens and their spacing kept
    (the layout pass wraps it again to the line length), unless it holds
    comments, which only its own lines can keep."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code.strip()).readline))
    except (tokenize.TokenError, SyntaxError):
        return f"({code})"
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    if any(t.type == tokenize.COMMENT for t in tokens):
        return f"({code})"
    out: list[str] = []
    prev = None
    for t in tokens:
        if t.type in skip:
            continue
        if prev is None:
            out.append(t.string)
        elif t.start[0] == prev.end[0]:
            out.append(t.line[prev.end[1]:t.start[1]] + t.string)
        else:
            if prev.string == "," and t.string in ")]}":
                out.pop()  # a trailing comma would keep the bracket exploded
                out.append(prev.string[:-1])
            out.append(("" if prev.string in "([{" or t.string in ")]}" else " ") + t.string)
        prev = t
    return "".join(out)


def _marked(tr: EditTransformer, expr: cst.BaseExpression) -> cst.BaseExpression:
    tr.written_exprs.add(id(expr))
    return expr


def layout_edit_refs(refs: _Refs, edit: LayoutEdit) -> None:
    """Decide the spellings (and imports) a layout edit needs before anything is
    edited, so that a module that cannot spell them fails cleanly."""
    if edit.kind == "builder-return" and edit.vmap is not None and refs.vmap is not None:
        return
    if edit.kind == "builder-return":
        refs.tree_map
        refs.jnp
    elif edit.kind == "len":
        refs.tree_leaves
    else:
        refs.tree_map


def layout_edit(module: cst.Module, refs: _Refs, node: cst.BaseExpression, edit: LayoutEdit) -> cst.BaseExpression:
    """A use of a per-layer parameter list, rewritten for the stacked layout."""
    bare = node.with_changes(lpar=[], rpar=[]) if getattr(node, "lpar", None) else node
    code = module.code_for_node(bare)
    vmap = refs.vmap if edit.kind == "builder-return" and edit.vmap is not None else None
    if vmap is not None and isinstance(bare, cst.ListComp) and isinstance(bare.elt, cst.Call) \
            and bare.for_in.inner_for_in is None and not bare.for_in.ifs:
        # `[f(k, a) for k in keys]` -> `jax.vmap(lambda k: f(k, a))(keys)`: one traced call, stacked leaves
        call = bare.elt
        keys = module.code_for_node(bare.for_in.iter)
        var = module.code_for_node(bare.for_in.target)
        if len(call.args) == 1 and call.args[0].keyword is None and call.args[0].star == "" \
                and isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == var:
            fn = module.code_for_node(call.func)
        else:
            fn = f"lambda {var}: {module.code_for_node(call)}"
        text = f"{vmap}({fn})({keys})"
    elif edit.kind == "builder-return":
        if "\n" in code:
            code = _one_line(code)
        text = f"{refs.tree_map}(lambda *layer: {refs.jnp}.stack(layer), *{code})"
    elif edit.kind == "len":
        arg = module.code_for_node(node.args[0].value)
        text = f"len({refs.tree_leaves}({arg})[0])"
    else:  # index / slice: every leaf indexed along the layer axis
        arg = module.code_for_node(node.value)
        text = f"{refs.tree_map}(lambda leaf: leaf[{edit.text}], {arg})"
    try:
        expr = parse_expr(text, module)
    except cst.ParserSyntaxError:  # a multi-line piece that does not parse in this form: keep tree.map
        expr = parse_expr(f"{refs.tree_map}(lambda *layer: {refs.jnp}.stack(layer), *({code}))", module)
    if getattr(node, "lpar", None):
        expr = expr.with_changes(lpar=node.lpar, rpar=node.rpar)
    return expr


def _drop_index(node: cst.Subscript, name: str, drop: Optional[int]) -> cst.BaseExpression:
    """``x[:, t, 0]`` -> ``x_t[:, 0]`` (``drop`` is the position of ``t``); ``x[t]`` -> ``x_t``."""
    if drop is None:
        return cst.Name(name, lpar=node.lpar, rpar=node.rpar)
    kept = [e for i, e in enumerate(node.slice) if i != drop]
    kept = [e.with_changes(comma=cst.MaybeSentinel.DEFAULT) for e in kept]
    if len(kept) > 1:
        kept = [e.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))) for e in kept[:-1]] \
            + kept[-1:]
    return node.with_changes(value=cst.Name(name), slice=kept)


def _needs_jnp(plan: ScanPlan) -> bool:
    if any(x.kind == "arange" or x.wrap_asarray or x.axis != 0 or (x.kind == "layers" and x.layout == "keep")
           for x in plan.xs):
        return True
    for y in plan.ys:
        if y.wrap_asarray or (y.kind == "at_set" and (y.at_arange is not None or y.at_index_before)):
            return True
        if any(c.kind in ("stack", "tree-stack") and c.axis != 0 for c in y.consumers):
            return True
    return False


def _merge(dst: EditTransformer, src: EditTransformer) -> None:
    dst.replace.update(src.replace)
    dst.drop |= src.drop
    dst.swap.update(src.swap)
    dst.capture |= src.capture
    dst.loops.update(src.loops)
    src.captured = dst.captured  # closures of src read the shared captures
    src.trailing_comments = dst.trailing_comments
    src.moved_comments = dst.moved_comments
    # the marks are written while the merged transformer runs: share them
    src.written = dst.written
    src.written_exprs = dst.written_exprs
    src.step_defs = dst.step_defs
    src.top_defs = dst.top_defs


def _is_pass_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, cst.Pass) for s in stmt.body)


def _has_pass(loop: cst.For) -> bool:
    return any(_is_pass_line(s) for s in block_statements(loop.body))


def step_name(role: str) -> str:
    """The step function's name for a loop's role: ``rnn`` -> ``_rnn_step``."""
    return "_step" if role in ("", "step") else f"_{role}_step"


def _slice(text: str) -> str:
    """A slice written by the analysis (``1:T + 1``) spaced like ``ruff format``."""
    parts = text.split(":")
    if len(parts) > 3 or any(p.count("(") != p.count(")") or p.count("[") != p.count("]") for p in parts):
        return text
    return slice_text([p.strip() or None for p in parts])


class _PlanEmitter:
    def __init__(self, plan: ScanPlan, index: SpanIndex, refs: _Refs, tr: EditTransformer,
                 reserved: set[str], taken: set[str], unroll: Optional[int] = None) -> None:
        self.plan = plan
        self.unroll = unroll  # `unroll=` of every scan, from the configuration
        self.index = index
        self.refs = refs
        self.tr = tr
        self.reserved = reserved  # names of the function's scope
        self.taken = taken  # names of the module (for a step defined at module level)
        self.module = index.module
        # names that live only inside the step function (its parameters, values bound for the
        # outputs): they only have to avoid the names the function uses, so a nested step may
        # reuse `carry` for its own parameter (the outer `carry` is unpacked and never read again)
        self.step_locals: set[str] = set(plan.function_names)
        self.discard = plan.discard or "_"
        tr.reserved = set()  # type: ignore[attr-defined]

    def _fresh(self, base: str) -> str:
        """A fresh name in the function's scope."""
        name = fresh_name(base, self.reserved)
        self.tr.reserved.add(name)  # type: ignore[attr-defined]
        self.step_locals.add(name)
        return name

    def _fresh_local(self, base: str) -> str:
        """A fresh name used only inside the step function."""
        return fresh_name(base, self.step_locals)

    def _written(self, stmt):
        self.tr.written.add(id(stmt))
        return stmt

    def register(self) -> None:
        plan, tr, index = self.plan, self.tr, self.index
        loop = index.find(plan.loop)
        if not isinstance(loop, cst.For) or loop.asynchronous is not None:
            raise MappingError("the loop is not a plain `for` statement")
        base = step_name(plan.role)
        if plan.hoisted is not None:
            # defined at module level: a name nothing in the module uses
            step = fresh_name(base, self.taken | self.reserved)
            self.taken.add(step)
            self.top = index.top_index(plan.loop)
        else:
            step = self._fresh(base)
        if plan.layout is not None and plan.layout.mode == "stacked":
            for edit in plan.layout.edits:
                layout_edit_refs(self.refs, edit)
        if any(x.kind == "layers" and (x.layout == "keep" or x.layer_slice) for x in plan.xs):
            self.refs.tree_map
        if any(c.kind == "tree-stack" and (c.axis != 0 or c.flipped != plan.reverse)
               for y in plan.ys for c in y.consumers):
            self.refs.tree_map  # decide the spelling (and the import) before checking for shadowing
        if self.needs_jnp():
            self.refs.jnp  # decide the spelling (and the import) before checking for shadowing
        # per-step inputs: index reads become the names bound by the step; a scanned
        # expression is rendered from its edited node (an enclosing loop's rewrite may
        # have changed it: `for r in xs[t] @ w` inside `for t in ...` reads `xs_t @ w`)
        self.xs_nodes: dict[int, int] = {}
        for i, item in enumerate(plan.xs):
            if item.kind in ("elements", "slice") and item.source is not None:
                node = index.find(item.source)
                tr.capture.add(id(node))
                self.xs_nodes[i] = id(node)
            for span, drop in zip(item.replaces, item.replace_drop or [None] * len(item.replaces)):
                node = index.find(span)
                tr.replace[id(node)] = (lambda name, drop: lambda u: _drop_index(u, name, drop))(item.bind, drop)
            for span in item.drop:
                # `x_t = xs[t]`: the step binds its input to `x_t` directly
                tr.drop.add(id(index.find(span)))
        # the parameter list's new layout: the builder and the other uses
        if plan.layout is not None and plan.layout.mode == "stacked":
            for edit in plan.layout.edits:
                node = index.find(edit.span)
                tr.replace[id(node)] = (lambda e: lambda u: _marked(tr, self._layout_edit(u, e)))(edit)
        # per-step outputs
        self.ys_values: list = []
        self.ys_targets: list[str] = []
        self.post: list[str] = []
        for y in plan.ys:
            self._register_output(y)
        tr.loops[id(loop)] = lambda o, u, step=step: self._build(u, step, o)

    def last_step(self) -> int:
        """Where the last step processed is among the stacked outputs: index 0
        when ``lax.scan`` runs in reverse (it stacks them in index order)."""
        return 0 if self.plan.reverse else -1

    def needs_jnp(self) -> bool:
        """The emitted code spells ``jax.numpy`` somewhere."""
        return _needs_jnp(self.plan)

    def _layout_edit(self, node: cst.BaseExpression, edit) -> cst.BaseExpression:
        return layout_edit(self.module, self.refs, node, edit)

    # -------------------------------------------------------------- outputs
    def _register_output(self, y: YsItem) -> None:
        tr, index = self.tr, self.index
        if y.kind == "last":
            target = self._fresh(f"all_{y.name}")
            self.ys_values.append(lambda: cst.Name(y.name))
            self.ys_targets.append(target)
            self.post.append(f"{y.name} = {target}[{self.last_step()}]")
            return
        stmt = index.find(y.statement)
        if y.kind == "discard":
            # collected but never read: the append and the empty list go
            tr.drop.add(id(stmt))
            if y.init is not None:
                tr.drop.add(id(index.find(y.init)))
            return
        value = index.find(y.value)
        tr.capture.add(id(value))
        if y.bind_value:
            bound = self._fresh_local("y")
            tr.swap[id(stmt)] = lambda u, vid=id(value), bound=bound: cst.Assign(
                targets=[cst.AssignTarget(cst.Name(bound))], value=tr.captured[vid])
            get_value = lambda bound=bound: cst.Name(bound)
        else:
            tr.drop.add(id(stmt))
            if y.value_is_name:
                get_value = lambda name=y.value_is_name: cst.Name(name)
            else:
                get_value = lambda vid=id(value): tr.captured[vid].with_changes(lpar=[], rpar=[]) \
                    if hasattr(tr.captured[vid], "lpar") else tr.captured[vid]
        if y.wrap_asarray:
            inner = get_value
            get_value = lambda inner=inner: cst.Call(func=parse_expr(f"{self.refs.jnp}.asarray", self.module),
                                                     args=[cst.Arg(inner())])
        self.ys_values.append(get_value)
        if y.kind == "append":
            if y.init is not None:
                tr.drop.add(id(index.find(y.init)))
            self.ys_targets.append(y.name)
            for c in y.consumers:
                node = index.find(c.span)
                if c.statement is not None and self._identity(c):
                    # `outs = jnp.stack(outs)` would become `outs = outs`: it goes
                    tr.drop.add(id(index.find(c.statement)))
                    continue
                tr.replace[id(node)] = (lambda c: lambda u: _marked(tr, self._consumer(u, c, y.name)))(c)
        else:  # at_set
            target = self._fresh(f"{y.name}_steps")
            self.ys_targets.append(target)
            rows = target
            pos = y.at_axis
            if pos:
                rows = f"{self.refs.jnp}.moveaxis({target}, 0, {pos})"
            if y.at_slice is not None:
                idx = _slice(y.at_slice)
            else:
                idx = f"{self.refs.jnp}.arange({', '.join(y.at_arange)})"
                if y.at_offset:
                    idx += f" + {y.at_offset}" if y.at_offset > 0 else f" - {-y.at_offset}"
            parts = [*y.at_index_before, idx]
            self.post.append(f"{y.name} = {y.name}.at[{', '.join(parts)}].set({rows})")

    def _identity(self, c) -> bool:
        """The consumer becomes the stacked name itself."""
        flip = self.plan.reverse != c.flipped
        return c.kind in ("stack", "array", "tree-stack") and c.axis == 0 and not flip

    def _consumer(self, node: cst.BaseExpression, c, name: str) -> cst.BaseExpression:
        flip = self.plan.reverse != c.flipped
        seq = f"{name}[::-1]" if flip else name
        if c.kind == "stack":
            text = seq if c.axis == 0 else f"{self.refs.jnp}.moveaxis({seq}, 0, {c.axis})"
        elif c.kind == "array":
            text = seq
        elif c.kind == "sequence":
            assert isinstance(node, cst.Call)
            first = node.args[0].with_changes(value=parse_expr(seq, self.module))
            return node.with_changes(args=[first, *node.args[1:]])
        elif c.kind == "len":
            return node
        elif c.kind == "tree-stack":
            leaf = "leaf[::-1]" if flip else "leaf"
            if c.axis != 0:
                leaf = f"{self.refs.jnp}.moveaxis({leaf}, 0, {c.axis})"
            text = name if leaf == "leaf" else f"{self.refs.tree_map}(lambda leaf: {leaf}, {name})"
        else:  # index
            i = c.axis
            text = f"{name}[{-1 - i}]" if self.plan.reverse else f"{name}[{i}]"
        expr = parse_expr(text, self.module)
        if getattr(node, "lpar", None):
            expr = expr.with_changes(lpar=node.lpar, rpar=node.rpar)
        return expr

    # -------------------------------------------------------------- the loop
    def _render_xs(self, item: XsItem) -> str:
        if item.kind == "layers":
            return self._render_layers(item)
        jnp = self.refs.jnp if (item.kind == "arange" or item.wrap_asarray or item.axis != 0) else None
        if item.kind == "arange":
            return f"{jnp}.arange({', '.join(item.range_args)})"
        src = item.source_text
        position = next(i for i, x in enumerate(self.plan.xs) if x is item)
        captured = self.tr.captured.get(self.xs_nodes.get(position, -1))
        if captured is not None:
            src = self.module.code_for_node(
                captured.with_changes(lpar=[], rpar=[]) if getattr(captured, "lpar", None) else captured)
        if "\n" in src:
            src = f"({src})"
        if item.kind == "elements":
            return f"{jnp}.asarray({src})" if item.wrap_asarray else src
        base = f"{jnp}.asarray({src})" if item.wrap_asarray else src
        if item.axis != 0:
            base = f"{jnp}.moveaxis({base}, {item.axis}, 0)"
        sl = item.slice_text()
        if sl != ":":
            if not is_atomic(base) and not base.endswith((")", "]")):
                base = f"({base})"
            base = f"{base}[{_slice(sl)}]"
        return base

    def _render_layers(self, item: XsItem) -> str:
        """A per-layer parameter list: already stacked (slice every leaf for
        ``params[a:b]``), or stacked here on every call (``--layout keep``)."""
        if item.layout == "stacked":
            if item.layer_slice:
                return f"{self.refs.tree_map}(lambda leaf: leaf[{item.layer_slice}], {item.source_text})"
            return item.source_text
        seq = f"{item.source_text}[{item.layer_slice}]" if item.layer_slice else item.source_text
        return f"{self.refs.tree_map}(lambda *layer: {self.refs.jnp}.stack(layer), *{seq})"

    def _tree_text(self, tree, leaf) -> Optional[str]:
        if tree is None or tree == []:
            return None
        if isinstance(tree, int):
            return leaf(tree)
        return "(" + ", ".join(self._tree_text(t, leaf) for t in tree) + ("," if len(tree) == 1 else "") + ")"

    def scan_options(self) -> list[str]:
        plan = self.plan
        options = []
        if plan.length is not None:
            options.append(f"length={plan.length}")
        if plan.reverse:
            options.append("reverse=True")
        if self.unroll is not None:
            options.append(f"unroll={self.unroll}")
        return options

    def passed_in_carry(self) -> list[str]:
        """The function's values a step defined at module level receives in its
        carry (``lax.scan`` has no other way in)."""
        return list(self.plan.hoisted or ())

    def broadcast_params(self) -> list[str]:
        """Parameters of the step after its inputs (broadcast arguments)."""
        return []

    def carry_only(self) -> bool:
        """The step returns its carry alone (no per-step outputs); ``lax.scan``
        always takes a ``(carry, ys)`` pair."""
        return False

    def scan_call(self, step: str, carry_init: str, xs_text: Optional[str]) -> tuple[str, str]:
        """The scan call, and a decorator line for the step (none for ``lax.scan``)."""
        args = [step, carry_init]
        if xs_text is not None:
            args.append(xs_text)
        return f"{self.refs.scan}({', '.join(args + self.scan_options())})", ""

    def _build(self, loop: cst.For, step: str, original: cst.For) -> list[cst.BaseStatement]:
        plan, module = self.plan, self.module
        discard = self.discard
        body = block_statements(loop.body)
        if not _has_pass(original):
            # the step ends with its `return`: no `pass` stands in for removed statements
            body = [s for s in body if not _is_pass_line(s)]
        prologue: list[cst.BaseStatement] = []
        # carries: the loop's, then the index carried as a counter, then (for a step defined at
        # module level) the function's values the step reads, passed through unchanged
        carries = list(plan.carries)
        outs, inits, lhs = list(carries), list(carries), list(carries)
        counter = plan.counter
        if counter is not None:
            # the index, carried from its Python start value (it stays weakly typed)
            carries.append(counter.name)
            step_text = f"+ {counter.step}" if counter.step >= 0 else f"- {-counter.step}"
            outs.append(f"{counter.name} {step_text}")
            inits.append(counter.init)
            lhs.append(discard)
        for name in self.passed_in_carry():
            carries.append(name)
            outs.append(name)
            inits.append(name)
            lhs.append(discard)
        for cell in reversed(plan.cells):
            # a module the step calls, carried first (the Flax target's `nnx.Carry`)
            carries.insert(0, cell.name)
            outs.insert(0, cell.name)
            inits.insert(0, cell.expr)
            lhs.insert(0, discard)
        if len(carries) == 1:
            carry_param = carries[0]
            carry_out, carry_init, carry_lhs = outs[0], inits[0], lhs[0]
        else:
            carry_param = self._fresh_local("carry")
            if carries:
                names = ", ".join(carries)
                prologue.append(self._written(parse_stmt(f"{names} = {carry_param}\n", module)))
                carry_out, carry_init = f"({', '.join(outs)})", f"({', '.join(inits)})"
                carry_lhs = f"({', '.join(lhs)})"
            else:
                carry_out, carry_init, carry_lhs = carry_param, "None", None
        if all(x == discard for x in lhs):
            carry_lhs = None  # nothing the function reads again comes out of the carry
        # inputs
        xs_text = self._tree_text(plan.xs_tree, lambda i: self._render_xs(plan.xs[i]))
        if xs_text is None:
            xs_param = "_" if "_" not in plan.step_reads else self._fresh_local("_x")
        elif isinstance(plan.xs_tree, int) and plan.elements_pattern.isidentifier():
            xs_param = plan.elements_pattern
        else:
            xs_param = self._fresh_local("layer" if plan.layout is not None else "inputs")
            pattern = plan.elements_pattern
            prologue.append(self._written(parse_stmt(f"{pattern} = {xs_param}\n", module)))
        # outputs
        # a tuple value keeps its parentheses inside the returned pair
        values = [v.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
                  if isinstance(v, cst.Tuple) and not v.lpar else v for v in (get() for get in self.ys_values)]
        if not values:
            ys_expr: cst.BaseExpression = cst.Name("None")
        elif len(values) == 1:
            ys_expr = values[0]
        else:
            ys_expr = cst.Tuple([cst.Element(v) for v in values])
        carry_only = self.carry_only()
        if carry_only:
            # a step whose result is its carry alone (`nnx.scan` with `out_axes=nnx.Carry`)
            ret = cst.SimpleStatementLine([cst.Return(value=parse_expr(carry_out.strip("()") if
                                                                        carry_out.startswith("(") else carry_out,
                                                                        module))])
        else:
            ret = cst.SimpleStatementLine([cst.Return(value=cst.Tuple(
                [cst.Element(parse_expr(carry_out, module)), cst.Element(ys_expr)], lpar=[], rpar=[]))])
        # comments of removed last statements (an `outs.append(h)  # ...`) go with the return
        footer = list(loop.body.footer) if isinstance(loop.body, cst.IndentedBlock) else []
        moved = [line for line in footer if id(line) in self.tr.moved_comments]
        footer = [line for line in footer if id(line) not in self.tr.moved_comments]
        trailing = [line for line in moved if id(line) in self.tr.trailing_comments]
        leading = [line for line in moved if id(line) not in self.tr.trailing_comments]
        if len(trailing) == 1:
            ret = ret.with_changes(trailing_whitespace=cst.TrailingWhitespace(
                whitespace=cst.SimpleWhitespace("  "), comment=trailing[0].comment))
        else:
            leading += trailing
        ret = self._written(ret.with_changes(leading_lines=leading))
        call, decorator = self.scan_call(step, carry_init, xs_text)
        params = ", ".join([carry_param, xs_param, *self.broadcast_params()])
        header = parse_stmt(f"{decorator}def {step}({params}):\n    pass\n", module)
        if isinstance(loop.body, cst.IndentedBlock):
            block = loop.body.with_changes(body=[*prologue, *body, ret], footer=footer)
        else:
            block = cst.IndentedBlock(body=[*prologue, *body, ret])
        ys_lhs = None
        if self.ys_targets:
            ys_lhs = self.ys_targets[0] if len(self.ys_targets) == 1 else f"({', '.join(self.ys_targets)})"
        if carry_only:
            line = f"{carry_lhs.strip('()') if carry_lhs.startswith('(') else carry_lhs} = {call}" \
                if carry_lhs else call
        elif carry_lhs and ys_lhs:
            line = f"{carry_lhs}, {ys_lhs} = {call}"
        elif carry_lhs:
            line = f"{carry_lhs}, {discard} = {call}"
        elif ys_lhs:
            line = f"{discard}, {ys_lhs} = {call}"
        else:
            line = call
        call_stmt = self._written(parse_stmt(line + "\n", module))
        post = [self._written(parse_stmt(p + "\n", module)) for p in self.post]
        if plan.hoisted is not None:
            # defined once at module level, before the statement holding the loop; the loop's
            # comments stay where the loop was, above the scan
            func = header.with_changes(body=block, leading_lines=[])
            self.tr.top_defs.setdefault(self.top, []).append(((plan.loop.line, plan.loop.col), func))
            call_stmt = call_stmt.with_changes(leading_lines=loop.leading_lines)
            self.tr.written.add(id(call_stmt))
            return [call_stmt, *post]
        func = header.with_changes(body=block, leading_lines=loop.leading_lines)
        self.tr.step_defs.add(id(func))
        return [func, call_stmt, *post]


def _make_command():
    """libcst's codemod runner class, built on first use (importing
    ``libcst.codemod`` costs more than a whole pre-commit run of loop2scan)."""
    from libcst.codemod import CodemodCommand, CodemodContext

    class JaxScanCommand(CodemodCommand):
        """libcst codemod: rewrite every loop loop2scan can prove safe into ``jax.lax.scan``."""

        DESCRIPTION = "Rewrite Python loops over time steps into jax.lax.scan (loop2scan)."

        def __init__(self, context: CodemodContext) -> None:
            super().__init__(context)

        def transform_module_impl(self, tree: cst.Module) -> cst.Module:
            from loop2scan.engine import rewrite_module

            result = rewrite_module(tree, framework="jax")
            for loop in result.loops:
                if loop.status == "declined":
                    self.warn(f"line {loop.line}: {loop.code} {loop.message}")
            return result.module if result.module is not None else tree

    JaxScanCommand.__module__ = __name__
    return JaxScanCommand


def __getattr__(name: str):
    if name == "JaxScanCommand":
        cls = _make_command()
        globals()["JaxScanCommand"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["JaxScanCommand"])
