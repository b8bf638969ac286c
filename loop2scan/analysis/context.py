"""Module- and function-level facts the loop analysis consults.

A :class:`ModuleContext` is built once per file (parent links, imports, the
module's own functions); a :class:`FunctionContext` lazily per function that
holds a loop (reaching definitions, liveness, closures, static definitions).
"""

from __future__ import annotations

import ast
import operator
import re
from functools import cached_property
from typing import Iterator, Optional

from ..plan import Span
from ..policy import DEFAULT_POLICY, Policy
from .activity import (
    arg_names,
    collect,
    free_variables,
    nested_scopes,
)
from .flow import Def, Liveness, ReachingDefinitions
from .imports import ImportTable, is_array_call
from .project import KEY_WORDS
from .nodes import children, walk

_LINE_SPLIT = re.compile(r"\r\n|\r|\n")

FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)
ARRAY_ANNOTATIONS = {
    "jax.Array", "jax.numpy.ndarray", "jax.typing.ArrayLike", "numpy.ndarray", "chex.Array",
    "jaxtyping.Array", "torch.Tensor", "jax.numpy.DeviceArray", "flax.typing.Array", "chex.ArrayNumpy",
    "numpy.typing.ArrayLike", "chex.ArrayBatched",
}
ARRAY_ANNOTATION_NAMES = {"Array", "ndarray", "Tensor", "jnp.ndarray", "jax.Array"}
JAXTYPING_DTYPES = {"Float", "Int", "Bool", "Shaped", "Num", "Real", "Integer", "Inexact", "Complex", "UInt", "Key",
                    "Float32", "Float16", "BFloat16", "Int32", "Int64"}


STATEMENT_BLOCKS = ("body", "orelse", "finalbody")


def statement_index(tree: ast.Module) -> "StatementIndex":
    """The statement structure of a parsed module (computed once per tree)."""
    index = tree.__dict__.get("_l2s_statements")
    if index is None:
        index = tree.__dict__["_l2s_statements"] = StatementIndex(tree)
    return index


class StatementIndex:
    """The loops, the imports (all, and the module-level ones) and the parent
    of every statement of a module, found in one pass over its statements."""

    def __init__(self, tree: ast.Module) -> None:
        self.parents: dict[int, ast.AST] = {}
        self.loops: list[ast.AST] = []
        self.import_nodes: list[ast.AST] = []
        self.module_import_nodes: list[ast.AST] = []
        self.statements: list[ast.stmt] = []  # every statement, nested ones included, in source order
        self._index(tree, top=True)
        # in source order: of two imports that bind one name, the later one wins, as it does when both run
        self.loops.sort(key=_POSITION)
        self.import_nodes.sort(key=_POSITION)
        self.module_import_nodes.sort(key=_POSITION)
        self.statements.sort(key=_POSITION)

    def _index(self, node: ast.AST, top: bool) -> None:
        parents, statements = self.parents, self.statements
        stack = [(node, top)]
        while stack:
            cur, cur_top = stack.pop()
            fields = _BLOCK_FIELDS.get(cur.__class__)
            if fields is None:
                fields = _BLOCK_FIELDS[cur.__class__] = tuple(f for f in _BLOCKS if f in cur._fields)
            if not fields:
                continue
            inner_top = cur_top and not isinstance(cur, _DEFINITIONS)
            for name in fields:
                block = getattr(cur, name, None)
                if not block:
                    continue
                if name == "handlers" or name == "cases":
                    owners = [(part, part.body) for part in block]
                    for part in block:
                        parents[id(part)] = cur
                else:
                    owners = [(cur, block)]
                for owner, stmts in owners:
                    for stmt in stmts:
                        if not isinstance(stmt, ast.stmt):
                            continue
                        parents[id(stmt)] = owner
                        statements.append(stmt)
                        if isinstance(stmt, (ast.For, ast.AsyncFor)):
                            self.loops.append(stmt)
                        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                            self.import_nodes.append(stmt)
                            if inner_top:
                                self.module_import_nodes.append(stmt)
                        stack.append((stmt, inner_top and not isinstance(stmt, _DEFINITIONS)))


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
_POSITION = operator.attrgetter("lineno", "col_offset")
_BLOCK_FIELDS: dict[type, tuple[str, ...]] = {}
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class ModuleContext:
    def __init__(self, tree: ast.Module, text: str, framework: Optional[str], layout: str = "stacked",
                 project=None, name: Optional[str] = None, policy: Policy = DEFAULT_POLICY,
                 path: Optional[str] = None) -> None:
        self.tree = tree
        self.text = text
        self.project = project  # the project index (other modules), when there is one
        self.name = name  # this module's dotted name in the project
        self.path = path  # the file, when the source came from one
        self.policy = policy  # which loops pay for a scan (loop2scan.policy)
        self.layout = layout  # "stacked" (change where parameter lists are built) or "keep" (stack per call)
        self.lines = _LINE_SPLIT.split(text)
        self.framework = framework
        # Statement-level structure only (cheap): loops, imports and the parent
        # of every statement.  Expression parents are filled in lazily, per
        # function, for the loops that get analysed in depth.
        index = statement_index(tree)
        self.parents: dict[int, ast.AST] = index.parents
        self.loops: list[ast.AST] = index.loops
        self.import_nodes: list[ast.AST] = index.import_nodes
        self.module_import_nodes: list[ast.AST] = index.module_import_nodes
        self.imports = ImportTable.from_nodes(self.module_import_nodes, self._relative_resolver())
        self._functions: dict[int, FunctionContext] = {}
        self._expr_parents_done: set[int] = set()

    def ensure_parents(self, subtree: ast.AST) -> None:
        """Record the parent of every node under ``subtree`` (once)."""
        if id(subtree) in self._expr_parents_done:
            return
        self._expr_parents_done.add(id(subtree))
        for node in walk(subtree):
            for child in children(node):
                self.parents[id(child)] = node

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
        for name in STATEMENT_BLOCKS:
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

    def first_pass_result(self, loop: ast.AST):
        """The result of one loop of this module before the module-wide passes,
        computed once: how another module sees whether a loop over a shared
        parameter list can be rewritten (exactly as this module's own run does)."""
        cache = self.__dict__.setdefault("_first_pass", {})
        if id(loop) not in cache:
            from .loop import LoopAnalysis

            cache[id(loop)] = None  # a loop that needs its own result is not rewritten
            cache[id(loop)] = LoopAnalysis(self, loop).run()
        return cache[id(loop)]

    def may_build_layers(self) -> bool:
        """A cheap test: a module-level function returns a list it builds (a
        parameter-list builder candidate)."""
        if "_may_build" not in self.__dict__:
            found = False
            # text first: a builder returns a list it builds from keys or a range
            if not (("return [" in self.text or ".append(" in self.text)
                    and ("split" in self.text or "range(" in self.text)):
                self.__dict__["_may_build"] = False
                return False
            for stmt in self.tree.body:
                if not isinstance(stmt, ast.FunctionDef) or found:
                    continue
                # a builder draws each layer from a PRNG key: its text names one
                text = "\n".join(self.lines[stmt.lineno - 1:stmt.end_lineno or stmt.lineno])
                if not any(w in text for w in KEY_WORDS):
                    continue
                lists = set()
                for node in walk(stmt):
                    if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.ListComp)):
                        lists.update(t.id for t in node.targets if isinstance(t, ast.Name))
                for node in walk(stmt):
                    if isinstance(node, ast.Return) and (isinstance(node.value, ast.ListComp) or (
                            isinstance(node.value, ast.Name) and node.value.id in lists)):
                        found = True
                        break
            self.__dict__["_may_build"] = found
        return self.__dict__["_may_build"]

    def _top_statement(self, stmt: ast.AST) -> ast.AST:
        """The top-level statement holding ``stmt``."""
        cur = stmt
        while True:
            parent = self.parents.get(id(cur))
            if parent is None or parent is self.tree:
                return cur
            cur = parent

    def imported_list_calls(self) -> list[str]:
        """The qualified names of functions of other modules of the project that
        may build a list (:meth:`ProjectIndex.function_may_build`) and whose
        result this module uses as a list (``v = f(...)``, then ``len(v)``, ``v[0]``,
        ``v[1:]``, ``for .. in v``, or passes ``v`` on): a cheap, syntactic test."""
        if "_imported_list_calls" in self.__dict__:
            return self.__dict__["_imported_list_calls"]
        out: list[str] = []
        if self.project is not None:
            bound: dict[str, str] = {}
            scopes = set()
            for stmt in statement_index(self.tree).statements:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                    q = self.imports.qualname(stmt.value.func)
                    if q is not None and self.project.function_may_build(q):
                        for t in stmt.targets:
                            bound.update((n.id, q) for n in walk(t) if isinstance(n, ast.Name))
                        scopes.add(id(self._top_statement(stmt)))
            if bound:
                tops = [stmt for stmt in self.tree.body if id(stmt) in scopes]
                for node in (n for top in tops for n in walk(top)):
                    name = None
                    if isinstance(node, ast.Call) and node.args:
                        name = next((a.id for a in node.args if isinstance(a, ast.Name) and a.id in bound), None)
                    elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                        name = node.value.id
                    elif isinstance(node, ast.For) and isinstance(node.iter, ast.Name):
                        name = node.iter.id
                    if name in bound and bound[name] not in out:
                        out.append(bound[name])
        self.__dict__["_imported_list_calls"] = out
        return out

    @cached_property
    def layers(self):
        """The per-layer parameter lists this module sees (built on first use;
        followed across the modules of its project)."""
        from .layers import LayerAnalysis

        return LayerAnalysis(self)

    @cached_property
    def module_functions(self) -> dict[str, ast.AST]:
        out = {}
        for stmt in self.tree.body:
            if isinstance(stmt, FUNCTION_TYPES):
                out[stmt.name] = stmt
        return out

    @cached_property
    def dotted_name(self) -> Optional[str]:
        """This module's dotted name: in the project, or else from the packages
        (``__init__.py`` files) around its file."""
        if self.name is not None:
            return self.name
        if self.path is None:
            return None
        from .project import module_name

        return module_name(self.path)[0]

    def display_path(self) -> str:
        """This module's file as the user knows it (relative to the project root), or its name."""
        if self.project is None or self.name is None:
            return self.name or "another module"
        from .layers import _display

        return _display(self.project.paths.get(self.name, self.name), self.project.root)

    def _relative_resolver(self):
        """Resolves relative imports when the module's place in its project is known."""
        if self.project is None or self.name is None:
            return None
        from .project import relative_base

        is_package = self.project.is_package(self.name)

        def resolve(level: int, module: Optional[str]) -> Optional[str]:
            base = relative_base(self.name, is_package, level)
            if base is None:
                return None
            return f"{base}.{module}" if module else base
        return resolve

    @cached_property
    def star_imports(self) -> list[str]:
        from .project import star_imports

        is_package = self.project.is_package(self.name) if self.project is not None and self.name else False
        return star_imports(self.tree, self.name, is_package)

    @cached_property
    def dunder_all(self) -> Optional[list[str]]:
        """The names of ``__all__`` when the module lists them literally."""
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                    for t in stmt.targets):
                if isinstance(stmt.value, (ast.List, ast.Tuple)):
                    return [e.value for e in stmt.value.elts if isinstance(e, ast.Constant)
                            and isinstance(e.value, str)]
        return None

    def imported_function(self, func: ast.AST, imports: ImportTable, shadowed=frozenset()):
        """The definition of an imported function of another module of the
        project (``(FunctionDef, ModuleContext)``), or ``None``."""
        if self.project is None:
            return None
        qual = imports.qualname(func, shadowed)
        return self.project.function(qual) if qual else None

    @cached_property
    def module_classes(self) -> dict[str, ast.ClassDef]:
        return {stmt.name: stmt for stmt in self.tree.body if isinstance(stmt, ast.ClassDef)}

    @cached_property
    def _registered_pytrees(self) -> set[str]:
        """Classes registered at module level: ``jax.tree_util.register_pytree_node(C, ...)``."""
        out: set[str] = set()
        for stmt in self.tree.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Name):
                q = self.imports.qualname(call.func) or ""
                if q.rsplit(".", 1)[-1] in ("register_pytree_node", "register_pytree_with_keys",
                                            "register_dataclass", "register_static"):
                    out.add(call.args[0].id)
        return out

    def class_holds_state(self, cls: ast.ClassDef, _depth: int = 0) -> bool:
        """A class of this module derived from a module class with state (NNX,
        Haiku, linen or PyTorch modules)."""
        from .kinds import STATEFUL_BASES, STATEFUL_NAMESPACES

        for base in cls.bases:
            q = self.imports.qualname(base) or ""
            if any(q == b or q.startswith(b + ".") for b in STATEFUL_BASES) or (
                    any(q.startswith(n + ".") for n in STATEFUL_NAMESPACES) and q.rsplit(".", 1)[-1] == "Module"):
                return True
            if isinstance(base, ast.Name) and base.id in self.module_classes and _depth < 8 \
                    and self.class_holds_state(self.module_classes[base.id], _depth + 1):
                return True
        return False

    def class_is_pytree(self, cls: ast.ClassDef, _depth: int = 0) -> Optional[bool]:
        """Whether instances of a class of this module are pytrees a scan can
        carry: ``True`` (NamedTuple, ``flax.struct``/``chex`` dataclasses, equinox
        modules, registered classes), ``False`` (a plain class or dataclass, or a
        stateful module), ``None`` (a base class this module does not show)."""
        from .kinds import PYTREE_BASES, STATEFUL_BASES

        if cls.name in self._registered_pytrees:
            return True
        for dec in cls.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            q = self.imports.qualname(target) or ""
            if q in PYTREE_BASES or q.rsplit(".", 1)[-1] in ("register_pytree_node_class", "register_dataclass"):
                return True
        verdict: Optional[bool] = False
        for base in cls.bases:
            q = self.imports.qualname(base) or ""
            if q in PYTREE_BASES or q in ("typing.NamedTuple", "collections.namedtuple") or q.endswith("NamedTuple"):
                return True
            if any(q == b or q.startswith(b + ".") for b in STATEFUL_BASES):
                return False
            if isinstance(base, ast.Name) and base.id in self.module_classes and _depth < 8:
                inner = self.class_is_pytree(self.module_classes[base.id], _depth + 1)
                if inner:
                    return True
                if inner is None:
                    verdict = None
                continue
            if isinstance(base, ast.Name) and base.id == "object":
                continue
            verdict = None  # a base this module does not show
        return verdict

    def is_array_function(self, name: str, _seen: Optional[set] = None) -> bool:
        """A module-level function that computes with arrays (it calls array
        operations, directly or through other such functions of the module)."""
        cache = self.__dict__.setdefault("_array_fn_cache", {})
        if name in cache:
            return cache[name]
        fn = self.module_functions.get(name)
        if fn is None:
            return False
        seen = _seen if _seen is not None else set()
        if name in seen:
            return False
        seen.add(name)
        result = False
        calls: set[str] = set()
        for node in walk(fn):
            if isinstance(node, ast.Call):
                if is_array_call(self.imports.qualname(node.func)):
                    result = True
                    break
                if isinstance(node.func, ast.Name):
                    calls.add(node.func.id)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                result = True
                break
        if not result:
            result = any(self.is_array_function(c, seen) for c in sorted(calls) if c != name)
        cache[name] = result
        return result

    def is_impure_function(self, name: str) -> bool:
        """A module-level function that rebinds globals (``global`` statements)."""
        cache = self.__dict__.setdefault("_impure_cache", {})
        if name not in cache:
            fn = self.module_functions.get(name)
            cache[name] = fn is not None and any(
                isinstance(node, (ast.Global, ast.Nonlocal)) for node in walk(fn))
        return cache[name]

    def module_assigned_values(self, name: str) -> list:
        """Values of module-level ``name = value`` assignments."""
        out = []
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
                out.append(stmt.value)
        return out

    @cached_property
    def module_names(self) -> set[str]:
        c_names: set[str] = set()
        for stmt in self.tree.body:
            c_names.update(collect(stmt, closures=False).stores)
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


class SourceOrderedDefs(frozenset):
    """A set of :class:`Def` that iterates in source order."""

    def __iter__(self):
        return iter(sorted(frozenset.__iter__(self), key=lambda d: (getattr(d.node, "lineno", 0),
                                                                     getattr(d.node, "col_offset", 0), d.kind)))


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

    @cached_property
    def _names(self) -> tuple[set[str], set[str], set[str]]:
        stores: set[str] = set()
        loads: set[str] = set()
        imported: set[str] = set()
        for stmt in self.func.body:
            c = collect(stmt, closures=False)  # the free variables of nested definitions are not needed here
            stores.update(c.stores)
            loads.update(n.id for n in c.loads)
            imported.update(c.imported)
        return stores, loads, imported

    @cached_property
    def shadowing(self) -> set[str]:
        """Local names that may hide a module-level import (bound other than by an import)."""
        stores, _, imported = self._names
        return (stores - imported) | set(self.params)

    @cached_property
    def locals(self) -> set[str]:
        """Names bound in the function (parameters included)."""
        return self._names[0] | set(self.params)

    @cached_property
    def _scan(self) -> tuple[set[str], Optional[ast.AST], set[str]]:
        declared: set[str] = set()
        dynamic: Optional[ast.AST] = None
        names: set[str] = set()
        stores = self._names[0]
        for node in walk(self.func):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                declared.update(node.names)
            elif (dynamic is None and isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id not in stores):
                name = node.func.id
                if name in ("locals", "eval", "exec") or (name in ("vars", "super") and not node.args):
                    dynamic = node
        return declared, dynamic, names

    @property
    def declared_global(self) -> set[str]:
        return self._scan[0]

    @property
    def uses_dynamic_scope(self) -> Optional[ast.AST]:
        return self._scan[1]

    @cached_property
    def all_names(self) -> set[str]:
        """Every name used anywhere in the function (for fresh names)."""
        return self._scan[2] | self._names[0] | self._names[1] | set(self.params)

    @cached_property
    def captured(self) -> dict[str, list[ast.AST]]:
        """Names read by nested functions/lambdas/classes, with the nested nodes."""
        out: dict[str, list[ast.AST]] = {}
        for stmt in self.func.body:
            for nested in _all_nested_scopes(stmt):
                for name in free_variables(nested):
                    out.setdefault(name, []).append(nested)
        return out

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
        """The definitions of ``name`` that reach ``stmt`` (iterated in source order,
        so that messages do not depend on hashing)."""
        state = self.reaching.before.get(id(stmt))
        if state is None:
            return SourceOrderedDefs()
        return SourceOrderedDefs(state.get(name, frozenset()))

    @cached_property
    def attribute_roots(self) -> dict[str, set[str]]:
        """For each name, the attributes read from it anywhere in the function
        (``x.shape`` -> {"x": {"shape"}})."""
        out: dict[str, set[str]] = {}
        for node in walk(self.func):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                out.setdefault(node.value.id, set()).add(node.attr)
        return out

    @cached_property
    def _assignments(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for node in walk(self.func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.value)
                elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
                    for i, e in enumerate(t.elts):
                        out.setdefault(e.id, []).append(_element(node.value, i, len(t.elts)))
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
        for node in walk(self.func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Name):
                    counts[t.id] = counts.get(t.id, 0) + 1
                    value[t.id] = node.value
                    handled.add(id(t))
                elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
                    for i, e in enumerate(t.elts):
                        counts[e.id] = counts.get(e.id, 0) + 1
                        value[e.id] = _element(node.value, i, len(t.elts))
                        handled.add(id(e))
        for node in walk(self.func):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in handled:
                counts[node.id] = counts.get(node.id, 0) + 2
            elif isinstance(node, ast.arg):
                counts[node.arg] = counts.get(node.arg, 0) + 2
        return {n: value[n] for n, c in counts.items() if c == 1 and n in value}


def _element(value: ast.AST, index: int, count: int):
    """The value bound to the ``index``-th name of ``a, b = value``: the element
    itself for a literal tuple of the same length, else ``(value, index, count)``."""
    if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == count and \
            not any(isinstance(e, ast.Starred) for e in value.elts):
        return value.elts[index]
    return (value, index, count)


def _all_nested_scopes(stmt: ast.AST) -> Iterator[ast.AST]:
    """Every function, lambda and class defined in ``stmt``, at any depth."""
    for nested in nested_scopes(stmt):
        yield nested
        body = nested.body if not isinstance(nested, ast.Lambda) else []
        for inner in body:
            yield from _all_nested_scopes(inner)
        if isinstance(nested, ast.Lambda):
            for inner in nested_scopes_in_expr(nested.body):
                yield inner


def nested_scopes_in_expr(expr: ast.AST) -> Iterator[ast.AST]:
    for node in walk(expr):
        if isinstance(node, ast.Lambda):
            yield node
