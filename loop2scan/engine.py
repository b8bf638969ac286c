"""The per-file pipeline: parse, analyse every loop, emit, validate.

``rewrite_source`` is the library entry point for one piece of source text;
``process_file`` wraps it with reading (encodings, BOM, line endings) and
optional atomic writing.  Nothing here imports a numerical framework.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from .analysis.context import ModuleContext, statement_index
from .analysis.imports import ImportTable
from .analysis.decline import short
from .analysis.loop import analyze_module
from .analysis.style import all_names
from .frontend import SyntaxProblem, parse_for_analysis
from .analysis.checks.layer_lists import standalone_edits
from .plan import LayoutEdit, LoopResult, ScanPlan
from .policy import DEFAULT_POLICY, DEFAULT_STYLE, Policy, Style
from .versions import JAX_SCAN, show

FRAMEWORKS = ("auto", "jax", "flax", "flax-linen", "torch_xla")
AVAILABLE_FRAMEWORKS = ("auto", "jax", "flax", "torch_xla")
TARGETS = {"jax": "jax.lax.scan", "flax": "flax.nnx.scan, and jax.lax.scan for array loops",
           "torch_xla": "torch_xla scan_layers, for loops over lists of layers"}


@dataclass
class SourceResult:
    """The outcome for one piece of source."""

    loops: list[LoopResult]
    new_text: Optional[str] = None  # None: nothing to change
    framework: Optional[str] = None
    error: Optional[str] = None
    module: object = None  # the rewritten libcst module, when there is one

    @property
    def changed(self) -> bool:
        return self.new_text is not None


def detect_framework(tree: ast.Module, requested: str = "auto") -> Optional[str]:
    """The target for a file: the requested one, or, for ``auto``, the one its
    imports point to (``torch_xla`` > Flax NNX > JAX > plain ``torch``).  The
    ``flax`` target is the JAX one plus ``nnx.scan`` for loops over stacks of
    NNX modules."""
    if requested != "auto":
        return "jax" if requested == "flax-linen" else requested
    found: set[str] = set()
    for node in statement_index(tree).import_nodes:
        found |= ImportTable._frameworks_of(node)
    if "torch_xla" in found:
        return "torch_xla"
    if "flax.nnx" in found:
        return "flax"
    if "jax" in found:
        return "jax"
    if "torch" in found:
        return "torch"
    return None


LAYOUTS = ("stacked", "keep")


def analyze_source(text: str, framework: str = "auto", layout: str = "stacked", project=None,
                   path: Optional[str] = None, policy: Policy = DEFAULT_POLICY) -> tuple[list[LoopResult], Optional[str]]:
    """Analyse without rewriting: ``(loops, framework)``; raises SyntaxProblem."""
    mctx = _module_context(text, framework, layout, project, path, policy)
    return analyze_module(mctx), mctx.framework


def _module_context(text: str, framework: str, layout: str, project, path: Optional[str],
                    policy: Policy = DEFAULT_POLICY) -> ModuleContext:
    """The analysis context of ``text``; raises SyntaxProblem.  A module of the
    project that another module's analysis has read already (same text, same
    settings) is not parsed again: one context per module, so that what was
    found there holds here."""
    name = project.name_of(path) if project is not None and path is not None else None
    if name is not None:
        known = project.loaded(name)
        if known is not None and known.text == text and known.layout == layout and known.policy == policy \
                and known.framework == detect_framework(known.tree, framework):
            return known
    tree, _ = parse_for_analysis(text)
    mctx = ModuleContext(tree, text, detect_framework(tree, framework), layout,
                         project=project if name is not None else None, name=name, policy=policy, path=path)
    if name is not None:
        project.register(name, mctx)
    return mctx


def rewrite_source(text: str, framework: str = "auto", layout: str = "stacked", project=None,
                   path: Optional[str] = None, policy: Policy = DEFAULT_POLICY,
                   style: Style = DEFAULT_STYLE, lines: Optional[Sequence[int]] = None) -> SourceResult:
    """Analyse ``text`` and rewrite every loop that is proven safe.

    ``layout`` decides loops over per-layer parameter lists: ``"stacked"``
    changes the function that builds the list to return it stacked once (and
    every use of it), ``"keep"`` stacks the list inside each function on every
    call.

    ``project`` (a :class:`loop2scan.analysis.project.ProjectIndex`) and ``path``
    place the source among the other modules of its project, for the rules that
    look at them (helpers defined elsewhere, importers of a parameter-list
    builder, callers that show whether a function runs under a transformation).
    ``policy`` says which loops pay for a scan, ``style`` how emitted code is laid out.
    ``lines``: rewrite (and report) only the loops at these lines (see :func:`select_loops`).

    Never raises for bad input: a syntax error is reported in ``error``.  The
    returned ``new_text`` is guaranteed to parse."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    try:
        mctx = _module_context(text, framework, layout, project, path, policy)
    except SyntaxProblem as e:
        return SourceResult([], error=str(e))
    fw = mctx.framework
    try:
        loops = analyze_module(mctx)
    except RecursionError:
        return SourceResult([], error="expressions nest too deeply for the analysis (Python's recursion limit)")
    too_old = fw in ("jax", "flax") and style.jax is not None and style.jax < JAX_SCAN
    if too_old:
        loops = [LoopResult(r.line, r.col, r.end_line, "declined", "L2S603",
                            f"the code must run on jax {show(style.jax)} (target-versions, or the project's "
                            f"dependencies), which has no `jax.lax.scan`; it came with jax {show(JAX_SCAN)}")
                 if r.status == "rewritten" else r for r in loops]
    if lines is not None:
        loops, problem = select_loops(loops, lines)
        if problem is not None:
            return SourceResult([], error=problem, framework=fw)
        extra = []
    else:
        # parameter lists whose loops are in other modules of the project still change here
        extra = standalone_edits(mctx, loops) if mctx.project is not None and fw is not None and not too_old else []
    plans = [r.plan for r in loops if r.status == "rewritten" and r.plan is not None]
    if not plans and not extra:
        return SourceResult(loops, framework=fw)
    return _emit(text, mctx, loops, fw, extra, style)


def select_loops(loops: list[LoopResult], lines: Sequence[int]) -> tuple[list[LoopResult], Optional[str]]:
    """The loops a ``FILE:LINE`` run rewrites: for each line, the loop starting
    there (or else the innermost one around it), with what must change with it:
    the loops rewritten inside its step, and every loop over the same parameter
    list (one layout for all of them).  A loop whose step would be traced inside
    an enclosing loop's step is rewritten only with that loop.  ``(loops, error)``."""
    chosen: list[LoopResult] = []
    for line in lines:
        at = [r for r in loops if r.line == line] or \
            [r for r in loops if r.line <= line <= r.end_line][-1:]
        if not at:
            return [], f"no `for` loop at line {line}"
        chosen += [r for r in at if r not in chosen]
    keys = {(r.line, r.col) for r in chosen}
    out: list[LoopResult] = []
    for r in chosen:
        plan = r.plan if r.status == "rewritten" else None
        if plan is not None and plan.nested_in is not None and plan.nested_in not in keys:
            r = LoopResult(r.line, r.col, r.end_line, "declined", "L2S702",
                           f"this loop's step is traced inside the step of the enclosing loop at line "
                           f"{plan.nested_in[0]}, and is rewritten only with it: name that line "
                           f"(`FILE:{plan.nested_in[0]}`) to rewrite both", where=r.where)
        out.append(r)
    # what changes with the chosen rewrites, until nothing more does
    grew = True
    while grew:
        grew = False
        emitted = {(r.line, r.col) for r in out if r.status == "rewritten"}
        layouts = {r.plan.layout.key for r in out if r.status == "rewritten" and r.plan.layout is not None}
        present = {(r.line, r.col) for r in out}
        for r in loops:
            if r.status != "rewritten" or r.plan is None or (r.line, r.col) in present:
                continue
            if r.plan.nested_in in emitted or (r.plan.layout is not None and r.plan.layout.key in layouts):
                out.append(r)
                grew = True
    out.sort(key=lambda r: (r.line, r.col))
    return out, None


def _emit(text: str, mctx: ModuleContext, loops: list[LoopResult], fw: str, extra=(),
          style: Style = DEFAULT_STYLE) -> SourceResult:
    """Parse with libcst only the top-level statements that hold a planned loop,
    rewrite them, splice them back, and add the imports the rewrites need."""
    import libcst as cst

    from loop2scan_codemods import emitter_for

    newline = _first_newline(text)
    pieces = re.split(r"(\r\n|\r|\n)", text)
    line_text = pieces[0::2]
    line_end = pieces[1::2] + [""]
    plans = [r.plan for r in loops if r.status == "rewritten" and r.plan is not None]
    # each plan edits a range of top-level statements (a layout change also edits the
    # function that builds the parameter list); overlapping ranges are rewritten together
    ranges = []
    for plan in plans:
        tops = [_top_level_statement(mctx, line) for line in _plan_lines(plan)]
        ranges.append([min(tops), max(tops), [plan]])
    for edit in extra:
        top = _top_level_statement(mctx, edit.span.line)
        ranges.append([top, top, [edit]])
    ranges.sort(key=lambda r: r[0])
    merged: list = []
    for lo, hi, group in ranges:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
            merged[-1][2].extend(group)
        else:
            merged.append([lo, hi, group])
    failures: dict = {}
    replacements: list[tuple[int, int, str]] = []  # (first line, last line, new text)
    imports: list = []
    emitter_cls = emitter_for(fw)
    target = None
    taken = all_names(mctx.tree)  # a step defined at module level takes a name no part of the module uses
    for lo, hi, group in merged:
        stmt = mctx.tree.body[lo]
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        if any(isinstance(p, ScanPlan) and p.hoisted is not None for p in group):
            # a step goes before the statement: the comment lines right above it stay with it
            # (not the comments that open the file: a license or a `#!` line stays first)
            top = first
            while top > 1 and line_text[top - 2].lstrip().startswith("#") and \
                    (lo == 0 or top - 1 > mctx.tree.body[lo - 1].end_lineno):
                top -= 1
            if top > 1:
                first = top
        last = mctx.tree.body[hi].end_lineno
        segment = "".join(line_text[i] + line_end[i] for i in range(first - 1, last))
        try:
            module = cst.parse_module(segment)
        except Exception as e:  # noqa: BLE001 - libcst rejects what ast accepted: leave it alone
            _reraise_interrupt(e)
            for plan in group:
                failures[plan.loop] = f"libcst could not parse this part of the file ({type(e).__name__})"
            continue
        emitter = emitter_cls(module, mctx.lines, mctx.module_names, mctx.imports.all_aliases(), first - 1,
                              style=style, module_name=mctx.dotted_name, taken=taken)
        target = emitter.target
        group_plans = [p for p in group if isinstance(p, ScanPlan)]
        group_edits = [e for e in group if isinstance(e, LayoutEdit)]
        try:
            new_module, group_failures = emitter.emit(group_plans, group_edits)
        except Exception as e:  # noqa: BLE001 - an emitter bug must never corrupt a file
            _reraise_interrupt(e)
            group_failures = {p.loop: f"{type(e).__name__}: {e}" for p in group_plans}
            group_failures.update({e.span: f"{type(e).__name__}: {e}" for e in group_edits})
            new_module = module
        edit_failures = [e for e in group_edits if e.span in group_failures]
        if edit_failures:
            # another module's loops rely on this edit: never leave the layouts out of step
            e = edit_failures[0]
            return SourceResult(loops, framework=fw, error=f"internal error: the stacked-layout edit at line "
                                f"{e.span.line} could not be applied ({short(group_failures[e.span], 120)})")
        failures.update(group_failures)
        if new_module is not module:
            code = new_module.code
            if module.default_newline != newline:
                # a part written with other line ends than the file: the rewritten part takes the file's
                code = re.sub(r"\r\n|\r|\n", lambda m: newline, code)
            replacements.append((first, last, code))
            for item in emitter.imports:
                if item not in imports:
                    imports.append(item)
    out: list[LoopResult] = []
    for r in loops:
        if r.status == "rewritten" and r.plan is not None:
            if r.plan.loop in failures:
                out.append(_internal(r, failures[r.plan.loop]))
                continue
            r.target = r.target or target
        out.append(r)
    if not replacements:
        return SourceResult(out, framework=fw)
    new_lines = [line_text[i] + line_end[i] for i in range(len(line_text))]
    for first, last, new in sorted(replacements, reverse=True):
        new_lines[first - 1:last] = [new]
    if imports:
        at = _import_insertion_line(mctx, ("torch", "torch_xla") if fw == "torch_xla" else ("jax",))
        block = "".join(_import_line(item) + newline for item in imports)
        if at > 0 and not new_lines[at - 1].endswith(("\n", "\r")):
            new_lines[at - 1] += newline
        new_lines.insert(at, block)
    new_text = "".join(new_lines)
    try:
        parse_for_analysis(new_text)  # the same parser (and newer-syntax fallback) as the input
    except SyntaxProblem as e:  # pragma: no cover - a bug; refuse rather than write invalid Python
        return SourceResult([_internal(r, f"the rewritten file did not parse ({e.message})")
                             if r.status == "rewritten" else r for r in out], framework=fw)
    return SourceResult(out, new_text=new_text if new_text != text else None, framework=fw)


def _plan_lines(plan) -> list[int]:
    lines = [plan.loop.line, plan.loop.end_line]
    for item in plan.xs:
        lines += [sp.line for sp in item.replaces]
    for y in plan.ys:
        lines += [sp.line for sp in (y.value, y.statement, y.init) if sp is not None]
        lines += [c.span.line for c in y.consumers]
    if plan.layout is not None:
        lines += [e.span.line for e in plan.layout.edits]
    if plan.modules is not None and not plan.modules.keep:
        build = plan.modules.build
        lines += [build.span.line, build.span.end_line]
        if build.loop_span is not None:
            lines += [build.loop_span.line, build.loop_span.end_line]
    return lines


def _top_level_statement(mctx: ModuleContext, line: int) -> int:
    body = mctx.tree.body
    for i, stmt in enumerate(body):
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        if first <= line <= stmt.end_lineno:
            return i
    raise ValueError(f"no top-level statement holds line {line}")


def _import_insertion_line(mctx: ModuleContext, roots: tuple[str, ...] = ("jax",)) -> int:
    """Index into the file's lines after which new imports go: after the last
    import of the target framework (``roots``: ``import jax...``, ``from jax...
    import ...``) of the module's leading block of docstring and imports, else
    after the last import of that block."""
    at = 0
    jax_at = None
    for i, stmt in enumerate(mctx.tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            at = stmt.end_lineno
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            at = stmt.end_lineno
            if _imports_framework(stmt, roots):
                jax_at = stmt.end_lineno
            continue
        break
    return jax_at if jax_at is not None else at


def _imports_framework(stmt: ast.stmt, roots: tuple[str, ...]) -> bool:
    if isinstance(stmt, ast.Import):
        return any(a.name.split(".")[0] in roots for a in stmt.names)
    return isinstance(stmt, ast.ImportFrom) and not stmt.level and stmt.module is not None and \
        stmt.module.split(".")[0] in roots


def _first_newline(text: str) -> str:
    m = re.search(r"\r\n|\r|\n", text)
    return m.group(0) if m else "\n"


def _import_line(item) -> str:
    if item.obj_name:
        line = f"from {item.module_name} import {item.obj_name}"
    else:
        line = f"import {item.module_name}"
    return line + (f" as {item.alias}" if item.alias else "")


def _internal(r: LoopResult, why: str) -> LoopResult:
    return LoopResult(r.line, r.col, r.end_line, "declined", "L2S901",
                      f"internal limitation while rewriting ({short(why, 200)}); the loop is left unchanged")


def _reraise_interrupt(error: BaseException) -> None:
    """A Ctrl-C that surfaced as another exception (a library's cleanup code
    failing while the interrupt unwound) must still stop the run."""
    seen = set()
    cur: Optional[BaseException] = error
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            raise KeyboardInterrupt from error
        seen.add(id(cur))
        cur = cur.__context__ or cur.__cause__


def rewrite_module(module, framework: str = "jax", layout: str = "stacked") -> SourceResult:
    """Rewrite a libcst module (used by the libcst codemod command)."""
    import libcst as cst

    result = rewrite_source(module.code, framework, layout)
    result.module = cst.parse_module(result.new_text) if result.new_text is not None else module
    return result
