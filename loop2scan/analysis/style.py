"""How a rewrite reads: facts that decide names in the emitted code.

* the step's *role* (:attr:`ScanPlan.role`): ``layer`` for a loop over a
  per-layer parameter list, otherwise the enclosing function's name (``rnn``
  gives ``_rnn_step``; ``__call__``/``forward`` of ``GRUCell`` give
  ``_gru_cell_step``), made distinct where one function holds several loops
  (``_bidirectional_reverse_step``, ``_encode_word_step``) and, for steps
  defined at module level, among the whole module's names;
* the *discard* name (:attr:`ScanPlan.discard`) the scan's unused results are
  bound to: ``_``, unless the function reads ``_`` (gettext's ``_``), which an
  assignment would make local;
* the plan's notes (why a last value is stacked rather than carried).
"""

from __future__ import annotations

import ast
import re
from typing import Optional

from ..naming import fresh_name
from ..plan import LoopResult, ScanPlan
from .nodes import walk

#: Methods named after what their class does: the class names the step.
_CLASS_METHODS = {"__call__": "", "forward": "", "__init__": "_init"}


def finish_plan(la, plan: ScanPlan) -> None:
    """Role, discard name and notes of one loop's plan."""
    plan.role = base_role(la, plan)
    plan.discard = discard_name(la, plan)
    for note in la.__dict__.get("notes", []):
        if note not in plan.notes:
            plan.notes.append(note)


def snake(name: str) -> str:
    """``GRUCell`` -> ``gru_cell``, ``_encode`` -> ``encode``."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return re.sub(r"_+", "_", text).strip("_")


def base_role(la, plan: ScanPlan) -> str:
    if plan.layout is not None or any(x.kind == "layers" for x in plan.xs):
        return "layer"
    func = la.func
    if func is None:
        return "step"
    cls = la.mctx.enclosing_class(func)
    name = func.name
    if cls is not None and cls.name and (name in _CLASS_METHODS or (name.startswith("__") and name.endswith("__"))):
        role = snake(cls.name) + _CLASS_METHODS.get(name, "")
    else:
        role = snake(name)
    role = re.sub(r"(^|_)step$", "", role).strip("_")  # `train_step` -> `_train_step`, not `_train_step_step`
    return role if role and role.isidentifier() else "step"


def discard_name(la, plan: ScanPlan) -> str:
    """``_``, or a fresh name when the function (or a function nested in it)
    reads ``_``: binding ``_`` would make that read see the scan's result."""
    if la.func is None:
        return "_"
    if not any(isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Load) for n in walk(la.func)):
        return "_"
    return fresh_name("_unused", set(plan.function_names))


def step_name(role: str) -> str:
    """The step function's name for a role (the emitters use the same rule)."""
    return "_step" if role in ("", "step") else f"_{role}_step"


def _qualifiers(plan: ScanPlan, cls: Optional[str]) -> list[str]:
    """Words that tell this loop from the other loops of its function, most
    telling first: its direction, its state, what it reads, what it collects."""
    out: list[str] = []
    if plan.reverse:
        out.append("reverse")
    out += [snake(c) for c in plan.carries[:1]]
    for x in plan.xs:
        if x.kind == "arange":
            continue
        if x.kind == "elements" and x.bind.isidentifier():
            out.append(snake(x.bind))
        words = re.findall(r"[^\W\d]\w*", x.source_text)
        if words:
            out.append(snake(words[-1]))
        break
    out += [snake(y.name) for y in plan.ys[:1] if y.kind != "discard"]
    if plan.reverse and plan.carries:
        out.append(f"reverse_{snake(plan.carries[0])}")
    if cls:
        out.append(snake(cls))
    return [q for q in dict.fromkeys(out) if q and q.isidentifier()]


def name_steps(mctx, results: list[LoopResult]) -> None:
    """Make step names distinct: within a function (loops one after the other,
    or nested), and for steps defined at module level, within the module."""
    plans: list[tuple[ast.AST, ScanPlan]] = []
    for loop, r in zip(mctx.loops, results):
        if r.status == "rewritten" and r.plan is not None:
            plans.append((loop, r.plan))
    if not plans:
        return
    module_used = _module_names(mctx)
    by_function: dict[int, list[tuple[ast.AST, ScanPlan]]] = {}
    for loop, plan in plans:
        func = mctx.enclosing_function(loop)
        by_function.setdefault(id(func), []).append((loop, plan))
    module_steps: set[str] = set()
    for group in by_function.values():
        used: set[str] = set()
        for loop, plan in group:
            func = mctx.enclosing_function(loop)
            cls = mctx.enclosing_class(func) if func is not None else None
            base = plan.role
            taken = set(plan.function_names) | used
            if plan.hoisted is not None:
                taken |= module_used | module_steps
            candidates = [base] + [f"{base}_{q}" for q in _qualifiers(plan, cls.name if cls else None)]
            role = next((c for c in candidates if step_name(c) not in taken), None)
            k = 2
            while role is None:
                if step_name(f"{base}_{k}") not in taken:
                    role = f"{base}_{k}"
                k += 1
            plan.role = role
            used.add(step_name(role))
            if plan.hoisted is not None:
                module_steps.add(step_name(role))


def all_names(tree: ast.Module) -> set[str]:
    """Every name the module uses (bound, read, an argument, a definition, an
    attribute name, an imported name, a ``global``/``nonlocal``)."""
    out: set[str] = set()
    for node in walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.alias):
            out.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
    return out


def _module_names(mctx) -> set[str]:
    cache = mctx.__dict__.get("_style_names")
    if cache is None:
        cache = mctx.__dict__["_style_names"] = all_names(mctx.tree)
    return cache
