"""Shared libcst machinery for the emitters.

* :class:`SpanIndex` finds the libcst node for a :class:`loop2scan.plan.Span`
  (the analysis reads source with ``ast``; positions are matched exactly and the
  node's text is compared with the span's text before anything is edited);
* :class:`EditTransformer` applies identity-keyed edits (replace an expression,
  drop or replace a small statement, replace a ``for`` statement) while keeping
  the comments of dropped lines and valid ``;`` separators;
* small helpers to parse snippets with the module's own formatting and to add
  imports once.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Sequence, Union

import libcst as cst
from dataclasses import dataclass

from libcst.metadata import MetadataWrapper, PositionProvider

from loop2scan.naming import fresh_name  # noqa: F401  (re-exported for the emitters)
from loop2scan.plan import Span

EXPR_KINDS = {"Subscript": cst.Subscript, "Call": cst.Call, "Name": cst.Name, "Attribute": cst.Attribute}
STMT_KINDS = {"Assign": cst.Assign, "AugAssign": cst.AugAssign, "AnnAssign": cst.AnnAssign, "Expr": cst.Expr}


class MappingError(Exception):
    """A span of the plan has no matching libcst node (the loop is left alone)."""


class SpanIndex:
    """All nodes of a module by exact source range."""

    def __init__(self, module: cst.Module, lines: Sequence[str], line_offset: int = 0) -> None:
        """``lines`` are the lines of the whole file; ``module`` may be a part of
        it that starts at line ``line_offset + 1`` (column 0)."""
        self.module = module
        self.wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        positions = self.wrapper.resolve(PositionProvider)
        self.positions = positions
        self.lines = lines
        self.offset = line_offset
        self._by_range: dict[tuple, list[cst.CSTNode]] = {}
        for node, rng in positions.items():
            key = (rng.start.line, rng.start.column, rng.end.line, rng.end.column)
            self._by_range.setdefault(key, []).append(node)

    def top_index(self, span: Span) -> int:
        """The index in ``module.body`` of the top-level statement holding ``span``."""
        line = span.line - self.offset
        for i, stmt in enumerate(self.module.body):
            rng = self.positions.get(stmt)
            if rng is not None and rng.start.line <= line <= rng.end.line:
                return i
        raise MappingError(f"no top-level statement holds line {span.line}")

    def text(self, span: Span) -> str:
        if span.line == span.end_line:
            return self.lines[span.line - 1][span.col:span.end_col]
        parts = [self.lines[span.line - 1][span.col:]]
        parts += self.lines[span.line:span.end_line - 1]
        parts.append(self.lines[span.end_line - 1][:span.end_col])
        return "\n".join(parts)

    def find(self, span: Span) -> cst.CSTNode:
        key = (span.line - self.offset, span.col, span.end_line - self.offset, span.end_col)
        candidates = self._by_range.get(key, [])
        want = EXPR_KINDS.get(span.kind) or STMT_KINDS.get(span.kind)
        if span.kind in ("For", "AsyncFor"):
            want = cst.For
        chosen = None
        for node in candidates:
            if want is not None:
                if isinstance(node, want):
                    chosen = node
                    break
            elif isinstance(node, cst.BaseExpression):
                chosen = node
                break
        text = self.text(span)
        if chosen is None and span.kind == "Tuple" and text.startswith("(") and text.endswith(")"):
            # Python's tuple positions include its parentheses, libcst's exclude them
            inner = (key[0], key[1] + 1, key[2], key[3] - 1)
            chosen = next((n for n in self._by_range.get(inner, []) if isinstance(n, cst.Tuple) and n.lpar), None)
            text = text[1:-1]
        if chosen is None:
            raise MappingError(f"no {span.kind} node at {span.line}:{span.col + 1}")
        if span.kind not in ("For", "AsyncFor"):
            expected = _norm(text)
            actual = _norm(self._code(chosen))
            if expected != actual:
                raise MappingError(f"source text mismatch at {span.line}:{span.col + 1}")
        return chosen

    def _code(self, node: cst.CSTNode) -> str:
        if hasattr(node, "lpar") and getattr(node, "lpar"):
            node = node.with_changes(lpar=[], rpar=[])
        if isinstance(node, cst.BaseSmallStatement) and hasattr(node, "semicolon"):
            node = node.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
        return self.module.code_for_node(node)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\r", "")).strip().rstrip(";").strip()


def parse_expr(text: str, module: cst.Module) -> cst.BaseExpression:
    return cst.parse_expression(text, config=module.config_for_parsing)


def parse_stmt(text: str, module: cst.Module) -> cst.BaseStatement:
    return cst.parse_statement(text, config=module.config_for_parsing)


def block_statements(body: Union[cst.IndentedBlock, cst.SimpleStatementSuite]) -> list[cst.BaseStatement]:
    """The statements of a block; a one-line suite (``for x in xs: f(x)``) is
    split into one line per small statement."""
    if isinstance(body, cst.IndentedBlock):
        return list(body.body)
    return [cst.SimpleStatementLine(body=[s.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)])
            for s in body.body]


class EditTransformer(cst.CSTTransformer):
    """Applies edits keyed by node identity.

    ``replace``: expression node -> new expression (or a callable taking the
    updated node); ``drop``: small statements to remove; ``swap``: small
    statement -> replacement built from the updated node; ``capture``: nodes
    whose *updated* version (after inner edits) must be remembered in
    ``captured``; ``loops``: ``for`` statements -> callable(original, updated)
    returning the statements that replace the loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.replace: dict[int, Callable[[cst.CSTNode], cst.CSTNode]] = {}
        self.drop: set[int] = set()
        self.swap: dict[int, Callable[[cst.CSTNode], cst.BaseSmallStatement]] = {}
        self.capture: set[int] = set()
        self.captured: dict[int, cst.CSTNode] = {}
        self.loops: dict[int, Callable[[cst.For, cst.For], list[cst.BaseStatement]]] = {}
        self._dead_lines: dict[int, list[cst.EmptyLine]] = {}
        # own-line comments made from the end-of-line comment of a removed line,
        # and every comment line that belonged to a removed line
        self.trailing_comments: set[int] = set()
        self.moved_comments: set[int] = set()
        # what the emitter wrote, for codemods.fit: statements, expressions inside the user's
        # statements, step functions defined in place, and step functions defined at module level
        # (by the index of the top-level statement they go before)
        self.written: set[int] = set()
        self.written_exprs: set[int] = set()
        self.step_defs: set[int] = set()
        self.top_defs: dict[int, list] = {}

    def on_leave(self, original_node, updated_node):
        key = id(original_node)
        if key in self.replace:
            updated_node = self.replace[key](updated_node)
        if key in self.capture:
            self.captured[key] = updated_node
        if key in self.swap:
            return self.swap[key](updated_node)
        if key in self.drop:
            return cst.RemoveFromParent()
        if key in self.loops:
            return cst.FlattenSentinel(self.loops[key](original_node, updated_node))
        if key in self.replace:
            return updated_node
        updated = super().on_leave(original_node, updated_node)
        if isinstance(original_node, cst.SimpleStatementLine) and isinstance(updated, cst.SimpleStatementLine):
            return self._fix_line(original_node, updated)
        if isinstance(updated, (cst.IndentedBlock, cst.Module)):
            return self._fix_block(updated)
        return updated

    def _fix_line(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        if len(updated.body) == len(original.body):
            return updated
        if not updated.body:
            comments = [line for line in updated.leading_lines if line.comment is not None]
            trailing = updated.trailing_whitespace.comment
            if trailing is not None:
                line = cst.EmptyLine(comment=trailing)
                self.trailing_comments.add(id(line))
                comments.append(line)
            placeholder = updated.with_changes(body=[cst.Pass()])
            self._dead_lines[id(placeholder)] = comments
            self.moved_comments.update(id(line) for line in comments)
            return placeholder
        last = updated.body[-1]
        if hasattr(last, "semicolon"):
            body = list(updated.body[:-1]) + [last.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)]
            updated = updated.with_changes(body=body)
        return updated

    def _fix_block(self, block):
        if not any(id(s) in self._dead_lines for s in block.body):
            return block
        pending: list[cst.EmptyLine] = []
        body = []
        for stmt in block.body:
            if id(stmt) in self._dead_lines:
                pending.extend(self._dead_lines.pop(id(stmt)))
                continue
            if pending:
                old = stmt
                stmt = stmt.with_changes(leading_lines=[*pending, *stmt.leading_lines])
                for marks in (self.written, self.step_defs):
                    if id(old) in marks:
                        marks.add(id(stmt))
                pending = []
            body.append(stmt)
        if isinstance(block, cst.Module):
            return block.with_changes(body=body, footer=[*pending, *block.footer])
        if not body:
            body = [cst.SimpleStatementLine(body=[cst.Pass()])]
        return block.with_changes(body=body, footer=[*pending, *block.footer])


@dataclass(frozen=True)
class ImportItem:
    """An import the rewritten code needs: ``import module [as alias]`` or
    ``from module import obj [as alias]``."""

    module_name: str
    obj_name: Optional[str] = None
    alias: Optional[str] = None


def module_aliases(module: cst.Module) -> dict[str, str]:
    """Module-level ``import``/``from ... import`` bindings: local name -> qualified name."""
    out: dict[str, str] = {}
    for stmt in module.body:
        lines = [stmt] if isinstance(stmt, cst.SimpleStatementLine) else []
        for line in lines:
            for small in line.body:
                if isinstance(small, cst.Import):
                    for alias in small.names:
                        name = _dotted(alias.name)
                        if alias.asname is not None:
                            out[alias.asname.name.value] = name
                        else:
                            root = name.split(".")[0]
                            out.setdefault(root, root)
                elif isinstance(small, cst.ImportFrom) and not small.relative and small.module is not None \
                        and not isinstance(small.names, cst.ImportStar):
                    mod = _dotted(small.module)
                    for alias in small.names:
                        local = alias.asname.name.value if alias.asname is not None else _dotted(alias.name)
                        out[local] = f"{mod}.{_dotted(alias.name)}"
    return out


def _dotted(node) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    raise TypeError(node)
