"""The per-file pipeline: parse, analyse every loop, emit, validate.

``rewrite_source`` is the library entry point for one piece of source text;
``process_file`` wraps it with reading (encodings, BOM, line endings) and
optional atomic writing.  Nothing here imports a numerical framework.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from .analysis.context import ModuleContext
from .analysis.imports import ImportTable
from .analysis.loops import analyze_module
from .frontend import SyntaxProblem, parse_for_analysis
from .plan import LoopResult

FRAMEWORKS = ("auto", "jax", "flax", "flax-linen", "torch_xla")
AVAILABLE_FRAMEWORKS = ("auto", "jax")
TARGETS = {"jax": "jax.lax.scan"}


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
    imports point to (``torch_xla`` > JAX/Flax > plain ``torch``)."""
    if requested != "auto":
        return "jax" if requested in ("jax", "flax", "flax-linen") else requested
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= ImportTable._frameworks_of(node)
    if "torch_xla" in found:
        return "torch_xla"
    if "jax" in found:
        return "jax"
    if "torch" in found:
        return "torch"
    return None


def analyze_source(text: str, framework: str = "auto") -> tuple[list[LoopResult], Optional[str]]:
    """Analyse without rewriting: ``(loops, framework)``; raises SyntaxProblem."""
    tree, _ = parse_for_analysis(text)
    fw = detect_framework(tree, framework)
    mctx = ModuleContext(tree, text, fw)
    return analyze_module(mctx), fw


def rewrite_source(text: str, framework: str = "auto") -> SourceResult:
    """Analyse ``text`` and rewrite every loop that is proven safe.

    Never raises for bad input: a syntax error is reported in ``error``.  The
    returned ``new_text`` is guaranteed to parse."""
    try:
        tree, _ = parse_for_analysis(text)
    except SyntaxProblem as e:
        return SourceResult([], error=str(e))
    fw = detect_framework(tree, framework)
    mctx = ModuleContext(tree, text, fw)
    loops = analyze_module(mctx)
    plans = [r.plan for r in loops if r.status == "rewritten" and r.plan is not None]
    if not plans:
        return SourceResult(loops, framework=fw)
    return _emit(text, mctx, loops, fw)


def _emit(text: str, mctx: ModuleContext, loops: list[LoopResult], fw: str) -> SourceResult:
    import libcst as cst

    from codemods import emitter_for

    try:
        module = cst.parse_module(text)
    except Exception as e:  # noqa: BLE001 - libcst rejects what ast accepted: leave the file alone
        return SourceResult([_internal(r, f"libcst could not parse the file ({type(e).__name__})")
                             if r.status == "rewritten" else r for r in loops], framework=fw)
    emitter = emitter_for(fw)(module, mctx.lines, mctx.module_names)
    plans = [r.plan for r in loops if r.status == "rewritten" and r.plan is not None]
    try:
        new_module, failures = emitter.emit(plans)
    except Exception as e:  # noqa: BLE001 - an emitter bug must never corrupt a file
        failures = {p.loop: f"{type(e).__name__}: {e}" for p in plans}
        new_module = module
    out: list[LoopResult] = []
    for r in loops:
        if r.status == "rewritten" and r.plan is not None:
            if r.plan.loop in failures:
                out.append(_internal(r, failures[r.plan.loop]))
                continue
            r.target = emitter.target
        out.append(r)
    if new_module is module or not any(r.status == "rewritten" for r in out):
        return SourceResult(out, framework=fw)
    new_text = new_module.code
    try:
        ast.parse(new_text)
    except SyntaxError as e:  # pragma: no cover - a bug; refuse rather than write invalid Python
        return SourceResult([_internal(r, f"the rewritten file did not parse ({e.msg})")
                             if r.status == "rewritten" else r for r in out], framework=fw)
    return SourceResult(out, new_text=new_text if new_text != text else None, framework=fw, module=new_module)


def _internal(r: LoopResult, why: str) -> LoopResult:
    return LoopResult(r.line, r.col, r.end_line, "declined", "L2S901",
                      f"internal limitation while rewriting ({why}); the loop is left unchanged")


def rewrite_module(module, framework: str = "jax") -> SourceResult:
    """Rewrite a libcst module (used by the libcst codemod command)."""
    result = rewrite_source(module.code, framework)
    if result.module is None:
        result.module = module
    return result
