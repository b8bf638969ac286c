"""Valid and invalid examples of the rules, written beside each rule.

Every module of :mod:`loop2scan.analysis.checks` lists, next to its codes,
``INVALID`` examples (loops the rule must decline with exactly that code) and
``VALID`` examples (near misses it must rewrite, run original against rewrite on
random inputs); ``tests/test_rules.py`` runs them all.  This module holds the
example types and the tiny language in which ``VALID`` cases name their
arguments, so that examples stay plain data (the analysis imports no
framework).

In the example sources a trailing ``# <-`` marks the line a decline must point
at; ``says`` lists text the message must contain.

Arguments: each case is one string of comma-separated items, one per
positional argument: ``f32[5,3,4]`` (random normal values of that dtype and
shape: ``f32``, ``f64``, ``bf16``, ``f16``, ``i32``, ``bool``), ``f32[]`` (a
scalar array), ``key`` (a PRNG key), or a Python literal (``True``, ``3``,
``0.5``, ``None``, ``"name"``).  Arrays are drawn with distinct seeds per
position, so that two arguments of one shape differ.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Optional

HEADER = "import jax\nimport jax.numpy as jnp\n"
MARK = "# <-"
DTYPES = {"f32": "float32", "f64": "float64", "bf16": "bfloat16", "f16": "float16", "i32": "int32",
          "bool": "bool"}
_ARRAY = re.compile(r"^(?P<dtype>[a-z]+\d*)\[(?P<shape>[\d,\s]*)\]$")


@dataclass(frozen=True)
class Invalid:
    """A loop that must be declined with ``code`` (or reported as not a candidate or skipped)."""

    code: str
    desc: str
    src: str
    says: tuple[str, ...] = ()
    hint: str = ""  # what to do: in the message, or in the code's documented fix
    status: str = "declined"
    framework: str = "jax"
    header: bool = True  # prepend `import jax` / `import jax.numpy as jnp`
    layout: str = "stacked"  # `--layout` of the run
    # a project around the loop: other files ((path, source) pairs), where ``src`` lives in it,
    # and the paths the run names (the whole project when empty)
    project: tuple[tuple[str, str], ...] = ()
    path: str = "pkg/model.py"
    run: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.code}-{self.desc}"

    @property
    def text(self) -> str:
        body = textwrap.dedent(self.src).lstrip("\n")
        return (HEADER + "\n" + body) if self.header else body


@dataclass(frozen=True)
class Valid:
    """A near miss of the rule ``near``: every loop in it must be rewritten, and
    the rewritten ``fn`` must compute what the original does on ``args``."""

    near: str
    desc: str
    src: str
    fn: str
    args: tuple[str, ...]
    static_argnums: tuple[int, ...] = ()
    grad: bool = True
    modes: tuple[str, ...] = ()  # also compare under "strict" dtype promotion and with "x64" enabled

    @property
    def id(self) -> str:
        return f"{self.near}-valid-{self.desc}"

    @property
    def text(self) -> str:
        return HEADER + "\n" + textwrap.dedent(self.src).lstrip("\n")


@dataclass(frozen=True)
class NotThis:
    """A loop that may be declined, but never for ``code`` (when ``fn`` is given
    it must be rewritten and is run like a :class:`Valid` case)."""

    code: str
    desc: str
    src: str
    fn: Optional[str] = None
    args: tuple[str, ...] = ()
    static_argnums: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.code}-not-{self.desc}"

    @property
    def text(self) -> str:
        return HEADER + "\n" + textwrap.dedent(self.src).lstrip("\n")


@dataclass(frozen=True)
class ArraySpec:
    dtype: str  # a NumPy dtype name
    shape: tuple[int, ...]


@dataclass(frozen=True)
class KeySpec:
    pass


def parse_args(case: str) -> list:
    """The argument items of one case: :class:`ArraySpec`, :class:`KeySpec`, or
    Python values."""
    items = []
    for item in _split_top_level(case):
        item = item.strip()
        m = _ARRAY.match(item)
        if m is not None:
            if m.group("dtype") not in DTYPES:
                raise ValueError(f"unknown dtype {m.group('dtype')!r} in {case!r}")
            shape = tuple(int(s) for s in m.group("shape").split(",") if s.strip())
            items.append(ArraySpec(DTYPES[m.group("dtype")], shape))
        elif item == "key":
            items.append(KeySpec())
        else:
            items.append(ast.literal_eval(item))
    return items


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def marked_lines(text: str) -> set[int]:
    """The 1-based lines of ``text`` carrying the ``# <-`` marker."""
    return {i for i, line in enumerate(text.splitlines(), 1)
            if line.rstrip().endswith(MARK) or (MARK + " ") in line}
