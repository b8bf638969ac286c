"""Activity analysis: which names an expression or statement reads and writes.

This is the first of the analysis passes (as in AutoGraph's ``activity``):
it knows Python's scoping rules for expressions (lambdas and comprehensions
have their own scope; ``:=`` inside a comprehension binds in the enclosing
function) and never descends into nested function or class bodies, whose reads
are reported as the free variables of the definition.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from .nodes import children, walk

FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def target_names(target: ast.AST) -> list[str]:
    """Names bound by an assignment target (``a``, ``a, (b, *c)``); attribute and
    subscript targets bind no name."""
    out: list[str] = []
    for node in _target_leaves(target):
        if isinstance(node, ast.Name):
            out.append(node.id)
    return out


def _target_leaves(target: ast.AST) -> Iterator[ast.AST]:
    if isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            yield from _target_leaves(elt)
    elif isinstance(target, ast.Starred):
        yield from _target_leaves(target.value)
    else:
        yield target


def target_side_effects(target: ast.AST) -> list[ast.AST]:
    """Attribute and subscript targets (``self.x = ...``, ``d[k] = ...``)."""
    return [n for n in _target_leaves(target) if isinstance(n, (ast.Attribute, ast.Subscript))]


def target_reads(target: ast.AST) -> list[ast.Name]:
    """Names read while assigning to a target: ``d`` and ``k`` in ``d[k] = v``."""
    out: list[ast.Name] = []
    for leaf in _target_leaves(target):
        if isinstance(leaf, ast.Attribute):
            out.extend(reads(leaf.value))
        elif isinstance(leaf, ast.Subscript):
            out.extend(reads(leaf.value))
            out.extend(reads(leaf.slice))
    return out


class _Collector(ast.NodeVisitor):
    """Collects the names a piece of code loads and binds, in source order,
    respecting the scopes of lambdas and comprehensions and never entering the
    body of a nested function or class (their free variables are recorded in
    ``closure_reads``)."""

    def __init__(self, closures: bool = True) -> None:
        self.closures = closures
        self.loads: list[ast.Name] = []
        self.stores: list[str] = []
        self.imported: list[str] = []
        self.walrus: list[str] = []
        self.closure_reads: set[str] = set()
        self._hidden: list[set[str]] = []  # names bound by enclosing lambdas/comprehensions

    # ``ast.NodeVisitor``'s dispatch, with the method looked up once per node type
    _methods: dict[type, str] = {}

    def visit(self, node: ast.AST) -> None:
        name = self._methods.get(node.__class__)
        if name is None:
            name = self._method(node.__class__)
        getattr(self, name)(node)

    def _method(self, cls: type) -> str:
        name = "visit_" + cls.__name__
        name = self._methods[cls] = name if hasattr(self, name) else "generic_visit"
        return name

    def generic_visit(self, node: ast.AST) -> None:
        methods = self._methods
        for child in children(node):
            name = methods.get(child.__class__)
            if name is None:
                name = self._method(child.__class__)
            if name == "generic_visit":  # most nodes: no frame for the dispatch
                self.generic_visit(child)
            else:
                getattr(self, name)(child)

    def visit_Constant(self, node: ast.Constant) -> None:
        """Nothing to collect (``ast.NodeVisitor``'s own method looks for the
        deprecated ``visit_Num``/``visit_Str`` on every constant)."""

    def _hidden_name(self, name: str) -> bool:
        return bool(self._hidden) and any(name in scope for scope in self._hidden)

    def visit_Name(self, node: ast.Name) -> None:
        if self._hidden_name(node.id):
            return
        if isinstance(node.ctx, ast.Load):
            self.loads.append(node)
        else:
            self.stores.append(node.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.walrus.append(node.target.id)
            self.stores.append(node.target.id)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self._hidden.append(set(arg_names(node.args)))
        self.visit(node.body)
        self._hidden.pop()

    def _definition(self, node) -> None:
        for expr in _def_header_exprs(node):
            self.visit(expr)
        if self.closures:
            self.closure_reads |= free_variables(node)
        self.stores.append(node.name)

    visit_FunctionDef = _definition
    visit_AsyncFunctionDef = _definition
    visit_ClassDef = _definition

    def visit_Import(self, node) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.stores.append(alias.asname or alias.name.split(".")[0])
                self.imported.append(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.stores.append(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node) -> None:
        self.generic_visit(node)
        if node.name:
            self.stores.append(node.name)

    def visit_MatchStar(self, node) -> None:
        if node.name:
            self.stores.append(node.name)

    def visit_MatchMapping(self, node) -> None:
        self.generic_visit(node)
        if node.rest:
            self.stores.append(node.rest)

    def _comprehension(self, node, parts: list[ast.AST]) -> None:
        gens: list[ast.comprehension] = node.generators
        # The first iterable is evaluated in the enclosing scope.
        self.visit(gens[0].iter)
        bound: set[str] = set()
        self._hidden.append(bound)
        for i, gen in enumerate(gens):
            if i > 0:
                self.visit(gen.iter)
            bound.update(target_names(gen.target))
            for cond in gen.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self._hidden.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp  # type: ignore[assignment]

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def collect(node: ast.AST, closures: bool = True) -> _Collector:
    """Names ``node`` loads and binds; ``closures=False`` skips the (costly) free
    variables of nested definitions."""
    c = _Collector(closures)
    c.visit(node)
    return c


def reads(node: ast.AST | None) -> list[ast.Name]:
    """Names an expression reads (in source order)."""
    return _reads_and_walrus(node)[0]


def _reads_and_walrus(node: ast.AST | None) -> tuple[list[ast.Name], list[str]]:
    """What :func:`reads` and :func:`walrus_writes` find, in one pass."""
    if node is None:
        return [], []
    c = _Collector()
    c.visit(node)
    return c.loads, c.walrus


def read_names(node: ast.AST | None) -> set[str]:
    return {n.id for n in reads(node)}


def walrus_writes(node: ast.AST | None) -> list[str]:
    return _reads_and_walrus(node)[1]


def arg_names(args: ast.arguments) -> list[str]:
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    if args.vararg:
        names.append(args.vararg.arg)
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


def _def_header_exprs(node: ast.AST) -> list[ast.AST]:
    """Expressions evaluated when a def/class statement runs."""
    out: list[ast.AST] = list(getattr(node, "decorator_list", []))
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        out += list(a.defaults) + [d for d in a.kw_defaults if d is not None]
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None and arg.annotation is not None:
                out.append(arg.annotation)
        if node.returns is not None:
            out.append(node.returns)
    elif isinstance(node, ast.ClassDef):
        out += list(node.bases) + [k.value for k in node.keywords]
    return out


def free_variables(node: ast.AST) -> set[str]:
    """Names a nested function, lambda or class body reads from enclosing scopes
    (an over-approximation: every name read there and not bound there)."""
    if isinstance(node, ast.Lambda):
        c = _Collector()
        c.visit_Lambda(node)
        return {n.id for n in c.loads} | c.closure_reads
    bound: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        bound.update(arg_names(node.args))
    loads: set[str] = set()
    declared: set[str] = set()
    for stmt in getattr(node, "body", []):
        c = collect(stmt)
        loads.update(n.id for n in c.loads)
        loads |= c.closure_reads
        bound.update(c.stores)
        for sub in walk_scope(stmt):
            if isinstance(sub, (ast.Global, ast.Nonlocal)):
                declared.update(sub.names)
    return (loads - bound) | declared


def walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Like ``ast.walk`` but never enters the body of a function, class or
    lambda (the definition node itself is yielded and its header expressions --
    decorators, defaults, annotations, bases -- are walked), not even when
    ``node`` itself is one."""
    todo = [node]
    while todo:
        cur = todo.pop()
        yield cur
        if isinstance(cur, SCOPE_NODES):
            if isinstance(cur, ast.Lambda):
                todo.extend(reversed(list(cur.args.defaults) + [d for d in cur.args.kw_defaults if d is not None]))
            else:
                todo.extend(reversed(_def_header_exprs(cur)))
            continue
        kids = children(cur)
        kids.reverse()
        todo.extend(kids)


def statements(stmts: Iterable[ast.stmt], into_definitions: bool = False) -> Iterator[ast.stmt]:
    """Every statement of a block, nested blocks included (``if``/``for``/
    ``try``/``with``/``match`` bodies); function and class bodies only when
    ``into_definitions``."""
    stack = list(stmts)[::-1]
    while stack:
        stmt = stack.pop()
        yield stmt
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not into_definitions:
            continue
        children: list[ast.stmt] = []
        for name in ("body", "orelse", "finalbody"):
            block = getattr(stmt, name, None)
            if isinstance(block, list):
                children += [b for b in block if isinstance(b, ast.stmt)]
        for h in getattr(stmt, "handlers", None) or []:
            children += h.body
        for c in getattr(stmt, "cases", None) or []:
            children += c.body
        stack.extend(reversed(children))


def full_slice(node: ast.AST) -> bool:
    """``:`` (no bounds, no step)."""
    return isinstance(node, ast.Slice) and node.lower is None and node.upper is None and node.step is None


def int_literal(node: Optional[ast.AST]) -> Optional[int]:
    """``3`` -> 3, ``-1`` -> -1; anything else -> None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    return None


def walk_all(stmts: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node of these statements, nested function bodies and lambdas
    included (code that runs inside a scan step runs there too)."""
    for stmt in stmts:
        yield from walk(stmt)


def walk_body(func: ast.AST) -> Iterator[ast.AST]:
    """Every node of a function's own body (nested definitions not entered)."""
    for stmt in func.body:
        yield from walk_scope(stmt)


def nested_scopes(node: ast.AST) -> Iterator[ast.AST]:
    """Function, lambda and class definitions in ``node``'s scope (``node``
    itself included when it is one)."""
    for sub in walk_scope(node):
        if isinstance(sub, SCOPE_NODES):
            yield sub


@dataclass
class Effects:
    """What a statement does to names, evaluated in order: ``reads`` happen
    before ``writes``.  For compound statements this covers only the header
    (the test of an ``if``, the iterable of a ``for``...)."""

    reads: list[ast.Name] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    closure_reads: set[str] = field(default_factory=set)


def header_effects(stmt: ast.stmt) -> Effects:
    e = Effects()
    if isinstance(stmt, ast.Assign):
        e.reads, walrus = _reads_and_walrus(stmt.value)
        for t in stmt.targets:
            e.reads += target_reads(t)
        e.writes = walrus + [n for t in stmt.targets for n in target_names(t)]
    elif isinstance(stmt, ast.AugAssign):
        e.reads, walrus = _reads_and_walrus(stmt.value)
        e.reads = e.reads + target_reads(stmt.target)
        if isinstance(stmt.target, ast.Name):
            e.reads.append(ast.Name(id=stmt.target.id, ctx=ast.Load(), lineno=stmt.lineno,
                                    col_offset=stmt.col_offset, end_lineno=stmt.target.end_lineno,
                                    end_col_offset=stmt.target.end_col_offset))
        e.writes = walrus + target_names(stmt.target)
    elif isinstance(stmt, ast.AnnAssign):
        if stmt.value is not None:
            e.reads, walrus = _reads_and_walrus(stmt.value)
            e.reads = e.reads + target_reads(stmt.target)
            e.writes = walrus + target_names(stmt.target)
    elif isinstance(stmt, (ast.Expr, ast.Return)):
        e.reads, e.writes = _reads_and_walrus(stmt.value)
    elif isinstance(stmt, ast.Raise):
        e.reads = reads(stmt.exc) + reads(stmt.cause)
    elif isinstance(stmt, ast.Assert):
        e.reads, e.writes = _reads_and_walrus(stmt.test)
        e.reads = e.reads + reads(stmt.msg)
    elif isinstance(stmt, ast.Delete):
        for t in stmt.targets:
            e.reads += target_reads(t)
            e.deletes += target_names(t)
    elif isinstance(stmt, (ast.If, ast.While)):
        e.reads, e.writes = _reads_and_walrus(stmt.test)
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        e.reads, e.writes = _reads_and_walrus(stmt.iter)  # the target is bound at the loop head
        e.reads = e.reads + target_reads(stmt.target)
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        for item in stmt.items:
            loads, walrus = _reads_and_walrus(item.context_expr)
            e.reads += loads
            e.writes += walrus
            if item.optional_vars is not None:
                e.reads += target_reads(item.optional_vars)
                e.writes += target_names(item.optional_vars)
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for expr in _def_header_exprs(stmt):
            e.reads += reads(expr)
        e.closure_reads = free_variables(stmt)
        e.writes = [stmt.name]
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            if alias.name == "*":
                continue
            e.writes.append(alias.asname or alias.name.split(".")[0])
    elif isinstance(stmt, ast.Match):
        e.reads = reads(stmt.subject)
    elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        pass
    return e


def all_written_names(stmts: Iterable[ast.stmt]) -> set[str]:
    """Every name bound anywhere in these statements (nested blocks included,
    nested scopes excluded, except the names the definitions themselves bind)."""
    out: set[str] = set()
    for stmt in stmts:
        out |= _statement_names(stmt)[0]
    return out


def all_read_names(stmts: Iterable[ast.stmt]) -> set[str]:
    """Every name read anywhere in these statements, free variables of nested
    definitions included."""
    out: set[str] = set()
    for stmt in stmts:
        out |= _statement_names(stmt)[1]
    return out


_NAMES = "_l2s_names"


def _statement_names(stmt: ast.stmt) -> tuple[frozenset[str], frozenset[str]]:
    """``(bound, read)`` names of a statement, collected once (trees never change
    after parsing; the checks of one loop ask about the same statements)."""
    found = stmt.__dict__.get(_NAMES)
    if found is None:
        c = collect(stmt)
        found = stmt.__dict__[_NAMES] = (frozenset(c.stores), frozenset(n.id for n in c.loads) | c.closure_reads)
    return found
