"""The exception the analysis raises to decline a loop."""

from __future__ import annotations

import ast
from typing import Optional


class Decline(Exception):
    """Refuse to rewrite a loop: a code from :mod:`loop2scan.codes`, a message that
    names the construct and says what to change, and the node at fault."""

    def __init__(self, code: str, message: str, node: Optional[ast.AST] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.node = node


def short(text: str, limit: int = 60) -> str:
    """Source quoted in a message: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
