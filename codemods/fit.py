"""Fit the statements the emitters write into the configured line length.

The emitters build statements on one line (a scan call, a step function's
``def`` and ``return``, the lines after the scan, a layout edit inside a user's
statement).  :class:`FitTransformer` runs over the rewritten module once, knows
the indentation of every statement, and splits only the statements the emitter
marked as written (or that hold an expression it wrote) when they are longer
than the limit, the way black and ``ruff format`` do:

* the outermost bracket of the statement's value is opened and its items are
  written one per line, one indentation step deeper, each followed by a comma
  (a "magic trailing comma", which keeps both formatters from joining the
  lines again); an item still too long is split the same way, recursively;
* a bare tuple (``return (h, c), ys``) gets parentheses first; a comprehension
  puts its body on its own line (and its ``for`` on another if needed);
* a value with no bracket of its own (``x = a + b``) is put in parentheses on
  its own line.

Lines the tool did not write are never touched, and a statement that already
spans several lines (the user's own layout) is left as it is.  The same pass
puts the blank lines ``ruff format`` wants around a step function defined
inside a function (one before, one after; none before the first statement of
a function body) and two around a step defined at module level.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import libcst as cst


class FitTransformer(cst.CSTTransformer):
    """Splits marked statements that exceed ``limit`` and spaces marked step
    functions.

    ``statements``: ids of statements written by the emitter;
    ``expressions``: ids of expressions written by the emitter inside a user's
    statement; ``functions``: ids of step functions defined inside a function
    (one blank line before and after, none before the first statement of a
    function body); ``top_functions``: ids of step functions defined at module
    level (``top_blank`` blank lines after them)."""

    def __init__(self, module: cst.Module, limit: int, statements: set[int], expressions: set[int],
                 functions: set[int], top_functions: set[int], top_blank: int = 2) -> None:
        super().__init__()
        self.module = module
        self.limit = limit
        self.statements = statements
        self.expressions = expressions
        self.functions = functions
        self.top_functions = top_functions
        self.top_blank = top_blank
        unit = module.default_indent
        self.unit = unit if unit and unit.strip() == "" else "    "
        self._indent: list[str] = [""]
        self._owners: list[cst.CSTNode] = []  # statements being visited (innermost last)
        self._flagged: set[int] = set()  # statements holding a written expression
        self._steps: set[int] = set()  # the step functions as they are in the new tree
        self._tops: set[int] = set()

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.IndentedBlock):
            self._indent.append(self._indent[-1] + (node.indent if node.indent is not None
                                                    else self.module.default_indent))
        if isinstance(node, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            self._owners.append(node)
        if id(node) in self.expressions:
            for owner in reversed(self._owners):
                if isinstance(owner, cst.SimpleStatementLine):
                    self._flagged.add(id(owner))
                    break
        return super().on_visit(node)

    def on_leave(self, original_node, updated_node):
        if isinstance(original_node, cst.IndentedBlock):
            self._indent.pop()
        if isinstance(original_node, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            self._owners.pop()
        updated = super().on_leave(original_node, updated_node)
        column = len(self._indent[-1].expandtabs())
        if isinstance(original_node, cst.SimpleStatementLine) and isinstance(updated, cst.SimpleStatementLine) \
                and (id(original_node) in self.statements or id(original_node) in self._flagged):
            updated = fit_line(updated, self.module, column, self.limit, self.unit)
        elif isinstance(original_node, cst.FunctionDef) and isinstance(updated, cst.FunctionDef):
            if id(original_node) in self.functions or id(original_node) in self.top_functions:
                updated = fit_def(updated, self.module, column, self.limit, self.unit)
                (self._steps if id(original_node) in self.functions else self._tops).add(id(updated))
        elif isinstance(updated, cst.IndentedBlock):
            function_body = bool(self._owners) and isinstance(self._owners[-1], cst.FunctionDef)
            body = _spaced(list(updated.body), self._steps, 1, function_body)
            if body is not None:
                updated = updated.with_changes(body=body)
        elif isinstance(updated, cst.Module):
            body = _spaced(list(updated.body), self._tops, self.top_blank, True, before=False)
            if body is not None:
                updated = updated.with_changes(body=body)
        return updated


def _spaced(body: list, steps: set[int], n: int, function_body: bool, before: bool = True) -> Optional[list]:
    """``body`` with ``n`` blank lines before each step function of ``steps``
    (unless it opens a function body, or ``before`` is false) and after it;
    ``None`` when nothing changes."""
    changed = False

    def replace(i: int, new) -> None:
        # a replaced step is a new object: track it by its own id (the old id could be reused by
        # another node once the old object is freed)
        if id(body[i]) in steps:
            steps.discard(id(body[i]))
            steps.add(id(new))
        body[i] = new

    for i, stmt in enumerate(body):
        if id(stmt) not in steps:
            continue
        if before and not (i == 0 and function_body):
            new = _blank_before(stmt, n)
            if new is not stmt:
                replace(i, new)
                changed = True
        if i + 1 < len(body):
            new = _blank_before(body[i + 1], n)
            if new is not body[i + 1]:
                replace(i + 1, new)
                changed = True
    return body if changed else None


def _blank_before(stmt, n: int, exact: bool = False):
    """``stmt`` with at least ``n`` blank lines before it (before its leading
    comments); ``exact``: exactly ``n``."""
    lines = list(stmt.leading_lines)
    blanks = 0
    while blanks < len(lines) and lines[blanks].comment is None:
        blanks += 1
    if blanks >= n and not exact:
        return stmt
    if blanks == n:
        return stmt
    new = [cst.EmptyLine(indent=False)] * n + lines[blanks:]
    return stmt.with_changes(leading_lines=new)


# ---------------------------------------------------------------------------- splitting

def fit_line(line: cst.SimpleStatementLine, module: cst.Module, column: int, limit: int,
             unit: str = "    ") -> cst.SimpleStatementLine:
    """``line`` (at ``column``) split to fit ``limit``, or unchanged when it fits,
    spans several lines already, or has no place to split."""
    if len(line.body) != 1:
        return line
    small = line.body[0]
    if hasattr(small, "semicolon"):
        small = small.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    text = module.code_for_node(small)
    if "\n" in text or "\r" in text:
        return line
    comment = line.trailing_whitespace.comment
    tail = ""
    if comment is not None:
        tail = line.trailing_whitespace.whitespace.value + comment.value
    if column + len(text) + len(tail) <= limit:
        return line
    lines = split_small(small, module, " " * column, limit - len(tail), unit)
    if lines is None:
        return line
    new_text = "\n".join(line[column:] for line in lines) + "\n"
    try:
        parsed = cst.parse_statement(new_text, config=module.config_for_parsing)
    except cst.ParserSyntaxError:  # pragma: no cover - a bug in the splitter: keep the long line
        return line
    if not isinstance(parsed, cst.SimpleStatementLine):  # pragma: no cover
        return line
    return line.with_changes(body=parsed.body)


def fit_def(fn: cst.FunctionDef, module: cst.Module, column: int, limit: int, unit: str = "    ") -> cst.FunctionDef:
    """A step function's ``def`` line with its parameters one per line when it
    is too long."""
    fn = fn.with_changes(decorators=[_fit_decorator(d, module, column, limit, unit) for d in fn.decorators])
    params = [module.code_for_node(p.with_changes(comma=cst.MaybeSentinel.DEFAULT))
              for p in fn.params.params]
    if fn.params.star_arg is not cst.MaybeSentinel.DEFAULT or fn.params.kwonly_params \
            or fn.params.star_kwarg is not None or fn.params.posonly_params or fn.returns is not None \
            or fn.asynchronous is not None:
        return fn
    header = f"def {fn.name.value}({', '.join(params)}):"
    if column + len(header) <= limit or not params:
        return fn
    inner = "".join(f"{unit}{p},\n" for p in params)
    text = f"def {fn.name.value}(\n{inner}):\n{unit}pass\n"
    parsed = cst.parse_statement(text, config=module.config_for_parsing)
    return fn.with_changes(params=parsed.params, whitespace_before_params=parsed.whitespace_before_params)


def _fit_decorator(dec: cst.Decorator, module: cst.Module, column: int, limit: int, unit: str) -> cst.Decorator:
    """A decorator call too long for its line, with its arguments one per line
    (as ``ruff format`` lays it out: each argument followed by a comma)."""
    call = dec.decorator
    if not isinstance(call, cst.Call) or not call.args or \
            column + 1 + len(module.code_for_node(call)) <= limit:
        return dec
    args = [module.code_for_node(a.with_changes(comma=cst.MaybeSentinel.DEFAULT)) for a in call.args]
    inner = "".join(f"{unit}{a},\n" for a in args)
    text = f"@{module.code_for_node(call.func)}(\n{inner})\ndef f():\n{unit}pass\n"
    parsed = cst.parse_statement(text, config=module.config_for_parsing)
    return dec.with_changes(decorator=parsed.decorators[0].decorator)


def split_small(small: cst.BaseSmallStatement, module: cst.Module, indent: str, limit: int,
                unit: str) -> Optional[list[str]]:
    """The lines of ``small`` split at its outermost bracket (absolute
    indentation ``indent``), or ``None`` when there is nowhere to split."""
    code = module.code_for_node
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        head = indent + code(small.targets[0].target) + " = "
        return _split_value(small.value, module, head, indent, "", limit, unit)
    if isinstance(small, cst.AugAssign):
        head = indent + code(small.target) + " " + code(small.operator).strip() + " "
        return _split_value(small.value, module, head, indent, "", limit, unit)
    if isinstance(small, cst.AnnAssign) and small.value is not None:
        head = indent + code(small.target) + ": " + code(small.annotation.annotation) + " = "
        return _split_value(small.value, module, head, indent, "", limit, unit)
    if isinstance(small, cst.Return) and small.value is not None:
        return _split_value(small.value, module, indent + "return ", indent, "", limit, unit)
    if isinstance(small, cst.Expr):
        return _split_expr(small.value, module, indent, indent, "", limit, unit)
    return None


def _split_value(expr: cst.BaseExpression, module, head: str, indent: str, tail: str, limit: int,
                 unit: str) -> Optional[list[str]]:
    """The value of an assignment or ``return``: a bare tuple gets parentheses,
    a value without brackets of its own is put in parentheses."""
    if isinstance(expr, cst.Tuple) and not expr.lpar:
        return _explode(head + "(", [(e, "") for e in _elements(expr)], module, indent, ")" + tail, limit,
                        unit, comma=True)
    lines = _split_expr(expr, module, head, indent, tail, limit, unit)
    if lines is not None:
        return lines
    text = _flat(module, expr)
    if _has_own_brackets(expr) or (getattr(expr, "lpar", None)):
        return None
    inner = indent + unit + text
    if len(inner) > limit:
        return None
    return [head + "(", inner, indent + ")" + tail]


def _split_expr(expr: cst.BaseExpression, module, head: str, indent: str, tail: str, limit: int,
                unit: str) -> Optional[list[str]]:
    """``head`` + ``expr`` + ``tail`` split at ``expr``'s outermost (last) bracket."""
    flat = head + _flat(module, expr) + tail
    if len(flat) <= limit:
        return [flat]
    if isinstance(expr, cst.Call) and not expr.lpar:
        if not expr.args:
            return None
        open_line = head + _flat(module, expr.func) + "("
        items = [(a.value, _arg_prefix(a, module)) for a in expr.args]
        return _explode(open_line, items, module, indent, ")" + tail, limit, unit, comma=True)
    if isinstance(expr, (cst.Tuple, cst.List, cst.Set)) and (not isinstance(expr, cst.Tuple) or expr.lpar):
        if not expr.elements:
            return None
        opening, closing = {cst.Tuple: ("(", ")"), cst.List: ("[", "]"), cst.Set: ("{", "}")}[type(expr)]
        items = [(e.value, "*" if isinstance(e, cst.StarredElement) else "") for e in expr.elements]
        return _explode(head + opening, items, module, indent, closing + tail, limit, unit, comma=True)
    if isinstance(expr, cst.Dict) and expr.elements and not expr.lpar:
        lines = [head + "{"]
        for e in expr.elements:
            if isinstance(e, cst.StarredDictElement):
                text = "**" + _flat(module, e.value)
            else:
                text = _flat(module, e.key) + ": " + _flat(module, e.value)
            lines.append(indent + unit + text + ",")
        lines.append(indent + "}" + tail)
        return lines
    if isinstance(expr, (cst.ListComp, cst.SetComp, cst.GeneratorExp)) and \
            (not isinstance(expr, cst.GeneratorExp) or expr.lpar):
        opening, closing = ("[", "]") if isinstance(expr, cst.ListComp) else ("{", "}") \
            if isinstance(expr, cst.SetComp) else ("(", ")")
        elt = _flat(module, expr.elt)
        fors = _flat(module, expr.for_in).strip()
        body = indent + unit + elt + " " + fors
        if len(body) <= limit:
            return [head + opening, body, indent + closing + tail]
        return [head + opening, indent + unit + elt, indent + unit + fors, indent + closing + tail]
    return None


def _explode(open_line: str, items: Sequence[tuple[cst.BaseExpression, str]], module, indent: str, close: str,
             limit: int, unit: str, comma: bool) -> Optional[list[str]]:
    """``open_line``, then each item on its own line (deeper by ``unit``) with a
    trailing comma, then ``close``."""
    if len(open_line) > limit:
        return None
    lines = [open_line]
    inner = indent + unit
    for value, prefix in items:
        sub = _split_expr(value, module, inner + prefix, inner, "," if comma else "", limit, unit)
        if sub is None:
            sub = [inner + prefix + _flat(module, value) + ("," if comma else "")]
        lines.extend(sub)
    lines.append(indent + close)
    return lines


def _arg_prefix(arg: cst.Arg, module) -> str:
    star = arg.star if isinstance(arg.star, str) else ""
    if arg.keyword is not None:
        return f"{arg.keyword.value}="
    return star


def _elements(expr: cst.Tuple) -> list[cst.BaseExpression]:
    return [e.value if not isinstance(e, cst.StarredElement) else e for e in expr.elements]


def _has_own_brackets(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, (cst.Call, cst.Tuple, cst.List, cst.Set, cst.Dict, cst.ListComp, cst.SetComp,
                             cst.DictComp, cst.GeneratorExp, cst.Subscript))


def _flat(module: cst.Module, node: cst.CSTNode) -> str:
    """The node's code on one line (the node has no line breaks of its own)."""
    if isinstance(node, cst.StarredElement):
        return "*" + module.code_for_node(node.value)
    return module.code_for_node(node)


# ---------------------------------------------------------------------------- slices

_SIMPLE = re.compile(r"-?\s*\d+|[^\W\d]\w*")


def slice_text(parts: Sequence[Optional[str]]) -> str:
    """``lower:upper[:step]`` spaced like black and ``ruff format``: spaces around
    the colons when a bound is more than a name or a number (``x[1 : T + 1]``,
    ``x[: max(T - 1, 0)]``, ``x[1:T]``)."""
    parts = list(parts)
    while len(parts) > 2 and parts[-1] is None:
        parts.pop()
    complex_ = any(p is not None and not _SIMPLE.fullmatch(p.strip()) for p in parts)
    if not complex_:
        return ":".join(p or "" for p in parts)
    out = parts[0] or ""
    for prev, p in zip(parts, parts[1:]):
        out += (" " if prev is not None else "") + ":" + (" " if p is not None else "") + (p or "")
    return out
