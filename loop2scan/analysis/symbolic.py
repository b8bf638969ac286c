"""Linear integer expressions over array lengths, for trip counts and bounds.

``range(T - 1)`` with ``T = xs.shape[0]`` becomes ``len0(xs) - 1``; that is
enough to prove that ``xs[t + 1]`` stays in bounds (so the read can become a
slice ``xs[1:]``) and to print bounds back as readable source.  Anything the
forms below do not cover is simply *unknown*, never guessed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from ..plan import is_atomic
from .activity import int_literal


@dataclass(frozen=True)
class Lin:
    """``sum(coef * atom) + const``.  Atoms named ``len<k>:<expr>`` are array
    lengths (non-negative); other atoms (``name:<n>``) are integers of unknown
    sign."""

    terms: tuple = ()  # sorted tuple of (atom, coef)
    const: int = 0
    display: tuple = field(default=(), compare=False)  # (atom, source text) pairs

    @staticmethod
    def constant(c: int) -> "Lin":
        return Lin((), c)

    @staticmethod
    def atom(atom: str, text: str) -> "Lin":
        return Lin(((atom, 1),), 0, ((atom, text),))

    def _combine(self, other: "Lin", sign: int) -> "Lin":
        terms = dict(self.terms)
        for a, c in other.terms:
            terms[a] = terms.get(a, 0) + sign * c
        disp = dict(self.display)
        for a, t in other.display:
            disp.setdefault(a, t)
        return Lin(tuple(sorted((a, c) for a, c in terms.items() if c != 0)), self.const + sign * other.const,
                   tuple(sorted(disp.items())))

    def __add__(self, other: "Lin") -> "Lin":
        return self._combine(other, 1)

    def __sub__(self, other: "Lin") -> "Lin":
        return self._combine(other, -1)

    def scale(self, k: int) -> "Lin":
        return Lin(tuple((a, c * k) for a, c in self.terms if c * k != 0), self.const * k, self.display)

    def shift(self, k: int) -> "Lin":
        return Lin(self.terms, self.const + k, self.display)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def nonnegative(self) -> bool:
        """Provably >= 0: only length atoms with positive coefficients."""
        return self.const >= 0 and all(c > 0 and a.startswith("len") for a, c in self.terms)

    def may_go_negative(self) -> bool:
        """Negative for some non-negative lengths (``T - 1``, ``b - a``): the forms a
        short input makes negative, where ``range`` runs no step but a slice bound
        would wrap around and a scan ``length`` would be invalid.  A lone integer
        of unknown sign (``range(n)``) is not counted: a negative count there is
        the caller's error, and the scan then raises rather than running."""
        return self.const < 0 or any(c < 0 for _, c in self.terms)

    def le(self, other: "Lin") -> bool:
        """Provably ``self <= other``."""
        return (other - self).nonnegative()

    def render(self) -> str:
        disp = dict(self.display)
        parts: list[str] = []
        for a, c in self.terms:
            text = disp.get(a, a)
            if not is_atomic(text):
                text = f"({text})"
            if c == 1:
                parts.append(("+", text))
            elif c == -1:
                parts.append(("-", text))
            elif c > 0:
                parts.append(("+", f"{c} * {text}"))
            else:
                parts.append(("-", f"{-c} * {text}"))
        if self.const or not parts:
            parts.append(("+" if self.const >= 0 else "-", str(abs(self.const))))
        out = ""
        for i, (sign, text) in enumerate(parts):
            if i == 0:
                out = text if sign == "+" else f"-{text}"
            else:
                out += f" {sign} {text}"
        return out


def length_atom(array: ast.AST, axis: int) -> str:
    return f"len{axis}:{ast.unparse(array)}"


def to_lin(expr: ast.AST, resolve, depth: int = 0) -> Optional[Lin]:
    """Linear form of ``expr`` or ``None``.

    ``resolve(name)`` returns a definition for a local name: an expression, or
    ``(value, index, count)`` for ``a, b, c = value``, or ``None``; it also
    says whether the name is stable (see :func:`stable_root`) through
    returning ``None`` when not.
    """
    if depth > 8:
        return None
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return Lin.constant(expr.value)
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        inner = to_lin(expr.operand, resolve, depth + 1)
        return inner.scale(-1) if inner is not None else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)):
        a = to_lin(expr.left, resolve, depth + 1)
        b = to_lin(expr.right, resolve, depth + 1)
        if a is None or b is None:
            return None
        return a + b if isinstance(expr.op, ast.Add) else a - b
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        a = to_lin(expr.left, resolve, depth + 1)
        b = to_lin(expr.right, resolve, depth + 1)
        if a is None or b is None:
            return None
        if a.is_const:
            return b.scale(a.const)
        if b.is_const:
            return a.scale(b.const)
        return None
    text = ast.unparse(expr)
    # len(x) and x.shape[k]
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "len"
            and len(expr.args) == 1 and not expr.keywords):
        return Lin.atom(length_atom(expr.args[0], 0), text)
    if (isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute)
            and expr.value.attr == "shape" and int_literal(expr.slice) is not None):
        # x.shape[-1] is its own atom: the same length as x.shape[ndim - 1], though not provably so
        return Lin.atom(length_atom(expr.value.value, int_literal(expr.slice)), text)
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "size"
            and len(expr.args) == 1 and not expr.keywords and int_literal(expr.args[0]) is not None):
        # torch's x.size(k): the same length as x.shape[k]
        return Lin.atom(length_atom(expr.func.value, int_literal(expr.args[0])), text)
    if isinstance(expr, ast.Name):
        d = resolve(expr.id)
        if d is not None:
            if isinstance(d, tuple):
                value, index, count = d
                if isinstance(value, ast.Attribute) and value.attr == "shape":
                    lin = Lin.atom(length_atom(value.value, index), expr.id)
                    return lin
            else:
                inner = to_lin(d, resolve, depth + 1)
                if inner is not None:
                    if len(inner.terms) == 1 and inner.const == 0 and inner.terms[0][1] == 1:
                        # keep the readable name for display
                        return Lin.atom(inner.terms[0][0], expr.id)
                    return inner
        return Lin.atom(f"name:{expr.id}", expr.id)
    return None
