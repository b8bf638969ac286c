"""The codes of the analysis, and the exception it raises to decline a loop."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Code:
    """One entry of the table of codes (:mod:`loop2scan.codes`)."""

    code: str
    name: str  # short kebab-case slug, used as the SARIF rule name
    title: str  # one line, what the rule is about
    fix: str  # what the user can do about it
    torch_fix: str = ""  # the same for PyTorch code, where the advice differs

    def fix_for(self, framework: Optional[str]) -> str:
        """What to do, in the words of the file's framework (JAX's unless PyTorch's)."""
        return self.torch_fix if self.torch_fix and framework in ("torch", "torch_xla") else self.fix

    def fix_text(self) -> str:
        """Both pieces of advice, for the places that show one per code (the code
        table, SARIF rules, ``loop2scan codes``)."""
        return f"{self.fix} With PyTorch: {self.torch_fix}" if self.torch_fix else self.fix


def advice(la, jax: str, torch: str) -> str:
    """The advice of a message, in the loop's framework: ``torch`` for PyTorch
    code (plain or ``torch_xla``), else ``jax``."""
    return torch if la.mctx.framework in ("torch", "torch_xla") else jax


class Decline(Exception):
    """Refuse to rewrite a loop: a code from :mod:`loop2scan.codes`, a message that
    names the construct and says what to change, and the node at fault."""

    def __init__(self, code: str, message: str, node: Optional[ast.AST] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.node = node
        self.module = None  # the module of ``node`` when it is not the loop's own (a ModuleContext)


def short(text: str, limit: int = 60) -> str:
    """Source quoted in a message: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def position(node: ast.AST) -> tuple[int, int]:
    """Where a node starts, for ordering problems (0, 0 for nodes without a position)."""
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
