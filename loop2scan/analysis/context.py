"""Module- and function-level facts the loop analysis consults.

A :class:`ModuleContext` is built once per file (parent links, imports, the
module's own functions); a :class:`FunctionContext` lazily per function that
holds a loop (reaching definitions, liveness, closures, static definitions).
"""

from __future__ import annotations

import ast
import re
from functools import cached_property
from typing import Iterator, Optional

from ..plan import Span
from .activity import (
    arg_names,
    collect,
    free_variables,
    nested_scopes,
    walk_scope,
)
from .flow import Def, Liveness, ReachingDefinitions
from .imports import ImportTable, is_array_call

_LINE_SPLIT = re.compile(r"\r\n|\r|\n")

FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)
ARRAY_ANNOTATIONS = {
    "jax.Array", "jax.numpy.ndarray", "jax.typing.ArrayLike", "numpy.ndarray", "chex.Array",
    "jaxtyping.Array", "torch.Tensor", "jax.numpy.DeviceArray", "flax.typing.Array",
}
ARRAY_ANNOTATION_NAMES = {"Array", "ndarray", "Tensor", "jnp.ndarray", "jax.Array"}
JAXTYPING_DTYPES = {"Float", "Int", "Bool", "Shaped", "Num", "Real", "Integer", "Inexact", "Complex", "UInt", "Key",
                    "Float32", "Float16", "BFloat16", "Int32", "Int64"}


class ModuleContext:
    def __init__(self, tree: ast.Module, text: str, framework: str) -> None:
        self.tree = tree
        self.text = text
        self.lines = _LINE_SPLIT.split(text)
        self.framework = framework
        self.imports = ImportTable.for_module(tree)
        self.parents: dict[int, ast.AST] = {}
        self.loops: list[ast.AST] = []
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
            if isinstance(node, (ast.For, ast.AsyncFor)):
                self.loops.append(node)
        self.loops.sort(key=lambda n: (n.lineno, n.col_offset))
        self._functions: dict[int, FunctionContext] = {}

    # -- positions -------------------------------------------------------
    def char_col(self, line: int, byte_col: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if text.isascii():
            return byte_col
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    def span(self, node: ast.AST) -> Span:
        return Span(
            node.lineno,
            self.char_col(node.lineno, node.col_offset),
            node.end_lineno or node.lineno,
            self.char_col(node.end_lineno or node.lineno, node.end_col_offset or 0),
            type(node).__name__,
        )

    def source(self, node: ast.AST) -> str:
        s = self.span(node)
        if s.line == s.end_line:
            return self.lines[s.line - 1][s.col:s.end_col]
        parts = [self.lines[s.line - 1][s.col:]]
        parts += self.lines[s.line:s.end_line - 1]
        parts.append(self.lines[s.end_line - 1][:s.end_col])
        return "\n".join(parts)

    # -- structure ---------------------------------------------------------
    def parent(self, node: ast.AST) -> Optional[ast.AST]:
        return self.parents.get(id(node))

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        cur = self.parent(node)
        while cur is not None:
            yield cur
            cur = self.parent(cur)

    def enclosing_function(self, node: ast.AST) -> Optional[ast.AST]:
        for anc in self.ancestors(node):
            if isinstance(anc, FUNCTION_TYPES):
                return anc
            if isinstance(anc, (ast.ClassDef, ast.Lambda)):
                return None
        return None

    def enclosing_class(self, func: ast.AST) -> Optional[ast.ClassDef]:
        parent = self.parent(func)
        return parent if isinstance(parent, ast.ClassDef) else None

    def qualified_function_name(self, func: ast.AST) -> str:
        names = [func.name]
        for anc in self.ancestors(func):
            if isinstance(anc, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(anc.name)
        return ".".join(reversed(names))

    def block_of(self, stmt: ast.stmt) -> tuple[Optional[list], int]:
        """The statement list holding ``stmt`` and its index there."""
        parent = self.parent(stmt)
        if parent is None:
            return None, -1
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(parent, name, None)
            if isinstance(block, list):
                for i, s in enumerate(block):
                    if s is stmt:
                        return block, i
        return None, -1

    def function(self, func: ast.AST) -> "FunctionContext":
        ctx = self._functions.get(id(func))
        if ctx is None:
            ctx = self._functions[id(func)] = FunctionContext(self, func)
        return ctx

    @cached_property
    def module_functions(self) -> dict[str, ast.AST]:
        out = {}
        for stmt in self.tree.body:
            if isinstance(stmt, FUNCTION_TYPES):
                out[stmt.name] = stmt
        return out

    @cached_property
    def array_functions(self) -> set[str]:
        """Module-level functions that compute with arrays (they call array ops,
        directly or through other such functions)."""
        direct: dict[str, set[str]] = {}
        result: set[str] = set()
        for name, fn in self.module_functions.items():
            calls: set[str] = set()
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    q = self.imports.qualname(node.func)
                    if is_array_call(q):
                        result.add(name)
                    if isinstance(node.func, ast.Name):
                        calls.add(node.func.id)
                elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                    result.add(name)
            direct[name] = calls
        changed = True
        while changed:
            changed = False
            for name, calls in direct.items():
                if name not in result and calls & result:
                    result.add(name)
                    changed = True
        return result

    @cached_property
    def impure_functions(self) -> set[str]:
        """Module-level functions that rebind globals (``global`` statements)."""
        out = set()
        for name, fn in self.module_functions.items():
            for node in ast.walk(fn):
                if isinstance(node, (ast.Global, ast.Nonlocal)):
                    out.add(name)
                    break
        return out

    @cached_property
    def module_names(self) -> set[str]:
        c_names: set[str] = set()
        for stmt in self.tree.body:
            c_names.update(collect(stmt).stores)
        return c_names

    def annotation_is_array(self, ann: Optional[ast.AST]) -> bool:
        if ann is None:
            return False
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return False
        if isinstance(ann, ast.Subscript):  # jaxtyping: Float[Array, "b d"]
            base = ann.value
            base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if base_name in JAXTYPING_DTYPES:
                inner = ann.slice.elts[0] if isinstance(ann.slice, ast.Tuple) and ann.slice.elts else ann.slice
                return self.annotation_is_array(inner)
            return False
        q = self.imports.qualname(ann)
        if q in ARRAY_ANNOTATIONS:
            return True
        try:
            text = ast.unparse(ann)
        except Exception:  # pragma: no cover
            return False
        return text in ARRAY_ANNOTATION_NAMES and (q is None or q in ARRAY_ANNOTATIONS)


class FunctionContext:
    """Facts about one function that holds a loop."""

    def __init__(self, module: ModuleContext, func: ast.AST) -> None:
        self.module = module
        self.func = func
        self.imports = module.imports.for_function(func)
        self.params = arg_names(func.args)
        self.param_annotations = {
            a.arg: a.annotation
            for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs
            + [x for x in (func.args.vararg, func.args.kwarg) if x is not None]
        }
        self.param_defaults: dict[str, ast.AST] = {}
        positional = func.args.posonlyargs + func.args.args
        for a, d in zip(positional[len(positional) - len(func.args.defaults):], func.args.defaults):
            self.param_defaults[a.arg] = d
        for a, d in zip(func.args.kwonlyargs, func.args.kw_defaults):
            if d is not None:
                self.param_defaults[a.arg] = d
        stores: set[str] = set()
        loads: set[str] = set()
        for stmt in func.body:
            c = collect(stmt)
            stores.update(c.stores)
            loads.update(n.id for n in c.loads)
        self.declared_global: set[str] = set()
        self.uses_dynamic_scope: Optional[ast.AST] = None
        for node in ast.walk(func):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                self.declared_global.update(node.names)
            elif (self.uses_dynamic_scope is None and isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name) and node.func.id not in stores):
                name = node.func.id
                if name in ("locals", "eval", "exec") or (name in ("vars", "super") and not node.args):
                    self.uses_dynamic_scope = node
        self.locals: set[str] = stores | set(self.params)
        self.all_names: set[str] = stores | loads | set(self.params)
        # Names read by nested functions/lambdas/classes, with the nested node.
        self.captured: dict[str, list[ast.AST]] = {}
        for stmt in func.body:
            for nested in _all_nested_scopes(stmt):
                for name in free_variables(nested):
                    self.captured.setdefault(name, []).append(nested)
        for node in ast.walk(func):
            if node is not func and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.all_names.add(node.name)
            elif isinstance(node, ast.Name):
                self.all_names.add(node.id)
            elif isinstance(node, ast.arg):
                self.all_names.add(node.arg)

    @cached_property
    def reaching(self) -> ReachingDefinitions:
        rd = ReachingDefinitions()
        state = {}
        for name in self.locals:
            state[name] = frozenset((Def(name, None, "undef"),))
        for name in self.params:
            state[name] = frozenset((Def(name, self.func, "param"),))
        rd.run(self.func.body, state)
        return rd

    @cached_property
    def liveness(self) -> Liveness:
        lv = Liveness()
        lv.run(self.func.body)
        return lv

    def defs_before(self, stmt: ast.stmt, name: str) -> frozenset:
        state = self.reaching.before.get(id(stmt))
        if state is None:
            return frozenset()
        return state.get(name, frozenset())

    @cached_property
    def attribute_roots(self) -> dict[str, set[str]]:
        """For each name, the attributes read from it anywhere in the function
        (``x.shape`` -> {"x": {"shape"}})."""
        out: dict[str, set[str]] = {}
        for node in ast.walk(self.func):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                out.setdefault(node.value.id, set()).add(node.attr)
        return out

    @cached_property
    def _assignments(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for node in ast.walk(self.func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.value)
                elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
                    for i, e in enumerate(t.elts):
                        out.setdefault(e.id, []).append((node.value, i, len(t.elts)))
        return out

    def assigned_values(self, name: str) -> list:
        """The values of every plain assignment ``name = value`` (or
        ``(value, index, count)`` for tuple unpacking) in the function."""
        return self._assignments.get(name, [])

    @cached_property
    def single_defs(self) -> dict[str, ast.AST]:
        """Names assigned exactly once in the function by a plain ``name = expr``
        or ``a, b, c = expr`` (the value expression, or ``(expr, index, count)``
        for unpacking), and bound nowhere else (not parameters either)."""
        counts: dict[str, int] = {}
        value: dict[str, object] = {}
        handled: set[int] = set()
        for node in ast.walk(self.func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Name):
                    counts[t.id] = counts.get(t.id, 0) + 1
                    value[t.id] = node.value
                    handled.add(id(t))
                elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
                    for i, e in enumerate(t.elts):
                        counts[e.id] = counts.get(e.id, 0) + 1
                        value[e.id] = (node.value, i, len(t.elts))
                        handled.add(id(e))
        for node in ast.walk(self.func):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in handled:
                counts[node.id] = counts.get(node.id, 0) + 2
            elif isinstance(node, ast.arg):
                counts[node.arg] = counts.get(node.arg, 0) + 2
        return {n: value[n] for n, c in counts.items() if c == 1 and n in value}


def _all_nested_scopes(stmt: ast.AST) -> Iterator[ast.AST]:
    for nested in nested_scopes(stmt):
        yield nested
        body = nested.body if not isinstance(nested, ast.Lambda) else [nested.body]
        for inner in body:
            yield from _all_nested_scopes(inner)
