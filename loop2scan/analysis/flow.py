"""Reaching definitions and liveness over structured Python statements.

The second and third analysis passes (after ``activity``).  Both work on the
statement tree directly (no explicit CFG): ``if``/``for``/``while``/``with``/
``try``/``match``, ``break``/``continue``/``return``/``raise`` are handled with
the usual structured transfer functions, loops by fixpoint iteration.  Nested
function and class bodies are not entered: a definition statement reads its
free variables where it stands.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .activity import header_effects, target_names, target_reads, read_names, reads
from .nodes import walk


class Def:
    """One definition site of a name.  ``kind`` is ``"undef"`` (not bound yet),
    ``"entry"`` (the value a region starts with), ``"param"``, or the kind of
    statement that binds it (``"assign"``, ``"aug"``, ``"for"``, ``"with"``,
    ``"def"``, ``"import"``, ``"except"``, ``"match"``, ``"del"``)."""

    __slots__ = ("name", "node", "kind")

    def __init__(self, name: str, node: Optional[ast.AST], kind: str) -> None:
        self.name = name
        self.node = node
        self.kind = kind

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        line = getattr(self.node, "lineno", "?")
        return f"Def({self.name}, {self.kind}@{line})"


State = Optional[dict]  # name -> frozenset[Def]; None means unreachable


def _join(a: State, b: State) -> State:
    if a is None:
        return b
    if b is None:
        return a
    out = dict(a)
    for k, v in b.items():
        cur = out.get(k)
        out[k] = v if cur is None else (cur | v)
    return out


def _same(a: State, b: State) -> bool:
    return a == b


def _stmt_kind(stmt: ast.stmt) -> str:
    if isinstance(stmt, ast.AugAssign):
        return "aug"
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return "def"
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return "import"
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return "with"
    return "assign"


@dataclass
class _LoopCtx:
    breaks: list = field(default_factory=list)
    continues: list = field(default_factory=list)


class ReachingDefinitions:
    """Forward may-analysis.  ``before[id(stmt)]`` is the state on entry to every
    statement of the region (nested blocks included)."""

    def __init__(self) -> None:
        self.before: dict[int, dict] = {}
        self._loops: list[_LoopCtx] = []
        self._try_states: list[list] = []
        self._defs: dict[tuple, frozenset] = {}

    def run(self, stmts: Iterable[ast.stmt], state: dict) -> State:
        return self._block(list(stmts), state)

    # -- helpers -------------------------------------------------------------
    def _define(self, state: dict, names: Iterable[str], node: ast.AST, kind: str) -> dict:
        state = dict(state)
        for n in names:
            key = (n, id(node), kind)
            d = self._defs.get(key)
            if d is None:
                d = self._defs[key] = frozenset((Def(n, node, kind),))
            state[n] = d
        return state

    def _block(self, stmts: list, state: State) -> State:
        for stmt in stmts:
            if state is None:
                # unreachable code still gets a (empty) record so lookups work
                self.before.setdefault(id(stmt), {})
                self._record_unreachable(stmt)
                continue
            state = self._stmt(stmt, state)
        return state

    def _record_unreachable(self, stmt: ast.stmt) -> None:
        for child in _child_blocks(stmt):
            for s in child:
                self.before.setdefault(id(s), {})
                self._record_unreachable(s)

    def _stmt(self, stmt: ast.stmt, state: dict) -> State:
        self.before[id(stmt)] = state
        for states in self._try_states:
            states.append(state)
        eff = header_effects(stmt)
        if isinstance(stmt, ast.If):
            state = self._define(state, eff.writes, stmt, "assign")
            return _join(self._block(stmt.body, state), self._block(stmt.orelse, state))
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            state = self._define(state, eff.writes, stmt, "assign")
            return self._loop(stmt, state, target_names(stmt.target))
        if isinstance(stmt, ast.While):
            return self._loop(stmt, state, [], test_writes=eff.writes)
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            state = self._define(state, eff.writes, stmt, "with")
            return self._block(stmt.body, state)
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            return self._try(stmt, state)
        if isinstance(stmt, ast.Match):
            return self._match(stmt, state)
        if isinstance(stmt, (ast.Return, ast.Raise)):
            return None
        if isinstance(stmt, ast.Break):
            if self._loops:
                self._loops[-1].breaks.append(state)
            return None
        if isinstance(stmt, ast.Continue):
            if self._loops:
                self._loops[-1].continues.append(state)
            return None
        state = self._define(state, eff.writes, stmt, _stmt_kind(stmt))
        if eff.deletes:
            state = self._define(state, eff.deletes, stmt, "del")
        return state

    def _loop(self, stmt, state: dict, targets: list[str], test_writes=()) -> State:
        head: State = state
        for _ in range(50):
            ctx = _LoopCtx()
            self._loops.append(ctx)
            body_in = head
            if test_writes:
                body_in = self._define(body_in, test_writes, stmt, "assign")
            if targets:
                body_in = self._define(body_in, targets, stmt, "for")
            body_out = self._block(stmt.body, body_in)
            self._loops.pop()
            new_head = state
            for s in [body_out, *ctx.continues]:
                new_head = _join(new_head, s)
            if _same(new_head, head):
                break
            head = new_head
        exit_state = head
        if test_writes and exit_state is not None:
            exit_state = self._define(exit_state, test_writes, stmt, "assign")
        out = self._block(stmt.orelse, exit_state)
        for s in ctx.breaks:
            out = _join(out, s)
        return out

    def _try(self, stmt, state: dict) -> State:
        seen: list = []
        self._try_states.append(seen)
        body_out = self._block(stmt.body, state)
        self._try_states.pop()
        handler_in: State = state
        for s in seen:
            handler_in = _join(handler_in, s)
        handler_in = _join(handler_in, body_out)
        outs: State = self._block(stmt.orelse, body_out) if body_out is not None else None
        for handler in stmt.handlers:
            h_state = handler_in
            if handler.name and h_state is not None:
                h_state = self._define(h_state, [handler.name], handler, "except")
            outs = _join(outs, self._block(handler.body, h_state))
        if stmt.finalbody:
            # the finally block also runs on the exceptional paths
            fin_in = _join(outs, handler_in)
            fin_out = self._block(stmt.finalbody, fin_in)
            return fin_out if outs is not None else None
        return outs

    def _match(self, stmt: ast.Match, state: dict) -> State:
        out: State = state  # no case may match
        for case in stmt.cases:
            names = _pattern_names(case.pattern)
            c_state = self._define(state, names, case, "match")
            out = _join(out, self._block(case.body, c_state))
        return out


def _pattern_names(pattern: ast.AST) -> list[str]:
    out = []
    for node in walk(pattern):
        if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            out.append(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            out.append(node.rest)
    return out


def _child_blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    blocks = []
    for name in ("body", "orelse", "finalbody"):
        b = getattr(stmt, name, None)
        if isinstance(b, list) and b and isinstance(b[0], ast.stmt):
            blocks.append(b)
    for h in getattr(stmt, "handlers", []) or []:
        blocks.append(h.body)
    for c in getattr(stmt, "cases", []) or []:
        blocks.append(c.body)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    return blocks


class Liveness:
    """Backward may-analysis.  ``live_after[id(loop)]`` is the set of names that
    may be read after a ``for`` statement finishes (including by later
    iterations of enclosing loops)."""

    def __init__(self) -> None:
        self.live_after: dict[int, set[str]] = {}
        self._loops: list[tuple[set[str], set[str]]] = []  # (break target live, continue target live)
        self._exc: list[set[str]] = []
        self._ret: list[set[str]] = [set()]

    def run(self, stmts: list[ast.stmt], out: set[str] | None = None) -> set[str]:
        return self._block(stmts, set(out or ()))

    def _block(self, stmts: list[ast.stmt], out: set[str]) -> set[str]:
        live = set(out)
        for stmt in reversed(stmts):
            live = self._stmt(stmt, live)
        return live

    def _stmt(self, stmt: ast.stmt, out: set[str]) -> set[str]:
        if self._exc:
            out = out | self._exc[-1]
        eff = header_effects(stmt)
        r = {n.id for n in eff.reads} | eff.closure_reads
        if isinstance(stmt, ast.If):
            return r | self._block(stmt.body, out) | self._block(stmt.orelse, out)
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.live_after[id(stmt)] = set(out)
            else_live = self._block(stmt.orelse, out)
            head = set(else_live)
            targets = set(target_names(stmt.target))
            t_reads = {n.id for n in target_reads(stmt.target)}
            for _ in range(50):
                self._loops.append((out, head))
                body_live = self._block(stmt.body, head)
                self._loops.pop()
                new_head = else_live | (body_live - targets) | t_reads
                if new_head == head:
                    break
                head = new_head
            return (r - set(eff.writes)) | head | read_names(stmt.iter)
        if isinstance(stmt, ast.While):
            else_live = self._block(stmt.orelse, out)
            head = set(else_live) | r
            for _ in range(50):
                self._loops.append((out, head))
                body_live = self._block(stmt.body, head)
                self._loops.pop()
                new_head = else_live | body_live | r
                if new_head == head:
                    break
                head = new_head
            return head
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            body_live = self._block(stmt.body, out)
            return r | (body_live - set(eff.writes))
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            fin_in = self._block(stmt.finalbody, out) if stmt.finalbody else set(out)
            handlers_live: set[str] = set()
            for h in stmt.handlers:
                hl = self._block(h.body, fin_in)
                if h.name:
                    hl = hl - {h.name}
                handlers_live |= hl | read_names(h.type)
            if stmt.finalbody:
                handlers_live |= fin_in
            else_live = self._block(stmt.orelse, fin_in)
            self._exc.append(handlers_live)
            body_live = self._block(stmt.body, else_live)
            self._exc.pop()
            return body_live | handlers_live
        if isinstance(stmt, ast.Match):
            live = r | out
            for case in stmt.cases:
                cl = self._block(case.body, out)
                cl = cl - set(_pattern_names(case.pattern))
                if case.guard is not None:
                    cl |= read_names(case.guard)
                live |= cl | {n.id for n in reads(case.pattern)}
            return live
        if isinstance(stmt, ast.Return):
            return r | self._ret[-1] | (self._exc[-1] if self._exc else set())
        if isinstance(stmt, ast.Raise):
            return r | (self._exc[-1] if self._exc else set())
        if isinstance(stmt, ast.Break):
            return set(self._loops[-1][0]) if self._loops else set()
        if isinstance(stmt, ast.Continue):
            return set(self._loops[-1][1]) if self._loops else set()
        kills = set(eff.writes) | set(eff.deletes)
        if isinstance(stmt, ast.AugAssign):
            kills = set()  # reads its own target
        return (out - kills) | r
