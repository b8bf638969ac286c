"""Parsing source for the analysis.

The analysis reads Python's ``ast``.  A file written for a newer Python than
the one running (PEP 695 type parameters, ``type`` aliases, PEP 701 f-strings,
template strings, unparenthesised ``except A, B``) is parsed by libcst instead
and *downlevelled*: exactly those constructs are blanked out, character for
character, so every other node keeps its line and column and the rewrite still
lands in the right place.  What is blanked never contains a loop.
"""

from __future__ import annotations

import ast
import gc
import re
from typing import Optional

_LINE_SPLIT = re.compile(r"(\r\n|\r|\n)")


class SyntaxProblem(Exception):
    """The file is not valid Python (for the running interpreter and for libcst)."""

    def __init__(self, message: str, line: Optional[int] = None, col: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.col}" if self.col else "") if self.line else ""
        return f"syntax error{' at ' + where if where else ''}: {self.message}"


def parse(text: str) -> ast.Module:
    """``ast.parse`` with the cyclic garbage collector paused.

    Parsing allocates every node of the tree at once, and an analysis keeps
    the trees of the modules it has read: with the collector running, each
    parse would pay for scanning all the trees kept before it (6x the parse
    time over a large package).  A tree holds no garbage cycles to collect."""
    if not gc.isenabled():
        return ast.parse(text)
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        gc.enable()


def parse_for_analysis(text: str) -> tuple[ast.Module, bool]:
    """``(tree, downlevelled)``; raises :class:`SyntaxProblem`."""
    try:
        return parse(text), False
    except SyntaxError as err:
        first = err
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        raise SyntaxProblem(str(err) or type(err).__name__) from None
    import libcst as cst  # only files the running Python cannot parse pay for it

    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError:
        raise SyntaxProblem(first.msg, first.lineno, first.offset) from None
    except (RecursionError, MemoryError):
        raise SyntaxProblem(first.msg, first.lineno, first.offset) from None
    blanked = downlevel(text, module)
    if blanked == text:  # nothing of a newer Python: the original error stands
        raise SyntaxProblem(first.msg, first.lineno, first.offset)
    try:
        return parse(blanked), True
    except SyntaxError:
        raise SyntaxProblem(f"{first.msg} (this syntax needs a newer Python than the one running loop2scan)",
                            first.lineno, first.offset) from None


def downlevel(text: str, module) -> str:
    """Blank the newer-syntax constructs of ``text`` keeping all positions."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    pieces = _LINE_SPLIT.split(text)
    lines = pieces[0::2]
    newlines = pieces[1::2]
    edits: list[tuple[int, int, int, int, str]] = []  # (line, col, end_line, end_col, replacement head)

    def blank(node: cst.CSTNode, head: str = "") -> None:
        rng = positions[node]
        edits.append((rng.start.line, rng.start.column, rng.end.line, rng.end.column, head))

    class Finder(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            if getattr(node, "type_parameters", None) is not None:
                blank(node.type_parameters)

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            if getattr(node, "type_parameters", None) is not None:
                blank(node.type_parameters)

        def visit_TypeAlias(self, node) -> bool:
            blank(node, "pass")
            return False

        def visit_FormattedString(self, node: cst.FormattedString) -> bool:
            code = module.code_for_node(node.with_changes(lpar=[], rpar=[]))
            try:
                ast.parse(code, mode="eval")
                return False
            except SyntaxError:
                blank(node, _placeholder(node))
                return False

        def visit_TemplatedString(self, node) -> bool:
            blank(node, _placeholder(node))
            return False

        def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
            t = node.type
            if isinstance(t, cst.Tuple) and not t.lpar and t.elements:
                rng = positions[t]
                first = positions[t.elements[0].value]
                edits.append((first.end.line, first.end.column, rng.end.line, rng.end.column, ""))

    wrapper.visit(Finder())
    for line, col, end_line, end_col, head in sorted(edits, reverse=True):
        if line == end_line:
            seg = lines[line - 1][col:end_col]
            rep = head + " " * max(0, len(seg) - len(head))
            lines[line - 1] = lines[line - 1][:col] + rep[:len(seg)] + lines[line - 1][end_col:]
        else:
            first_seg = lines[line - 1][col:]
            lines[line - 1] = lines[line - 1][:col] + (head + " " * len(first_seg))[:max(len(first_seg), len(head))]
            for i in range(line, end_line - 1):
                lines[i] = " " * len(lines[i])
            lines[end_line - 1] = " " * end_col + lines[end_line - 1][end_col:]
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i < len(newlines):
            out.append(newlines[i])
    return "".join(out)


def _placeholder(node) -> str:
    """A same-length-or-shorter expression that reads the names the string reads."""
    import libcst as cst

    names: list[str] = []

    class Names(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            if n.value not in names:
                names.append(n.value)

    node.visit(Names())
    text = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")" if names else "0"
    return text
