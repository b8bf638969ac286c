"""The table of loop2scan codes.

Every loop the tool looks at ends with one code: ``L2S000`` when it is rewritten,
``L2S001``/``L2S002`` when it is not a candidate or skipped, and one decline code
otherwise.  Codes are stable: new ones are added, existing ones never change
meaning.  Each code is defined beside the rule that gives it
(:mod:`loop2scan.analysis.checks`); ``docs/codes.md`` is generated from this table (see
``tests/test_docs.py``), so the two never drift apart.
"""

from __future__ import annotations

from .analysis.checks import RULE_CODES
from .analysis.checks.candidate import NOT_CANDIDATE, REWRITTEN, SKIPPED
from .analysis.decline import Code

__all__ = ["CODES", "Code", "CodeSelection", "NOT_CANDIDATE", "REWRITTEN", "SKIPPED", "code_table_markdown"]

_CODES = [
    *RULE_CODES,
    Code("L2S901", "internal", "internal limitation while rewriting",
         "Please report this loop; it is left unchanged."),
]

CODES: dict[str, Code] = {c.code: c for c in _CODES}


def code_table_markdown() -> str:
    """The documentation table of all codes (``docs/codes.md`` embeds it)."""
    lines = ["| code | name | meaning | what to do |", "|---|---|---|---|"]
    for c in _CODES:
        lines.append(f"| `{c.code}` | {c.name} | {c.title} | {c.fix_text()} |")
    return "\n".join(lines) + "\n"


class CodeSelection:
    """Which codes a run reports (``select`` / ``ignore``, as in ruff): a code is
    reported when a ``select`` prefix matches it (every code when ``select`` is
    empty) and no ``ignore`` prefix as long or longer does.  Rewrites are always
    reported: a selection says what to hear about, never what to rewrite."""

    def __init__(self, select=(), ignore=()) -> None:
        for selector in (*select, *ignore):
            if not any(code.startswith(selector.upper()) for code in CODES):
                raise ValueError(f"unknown code selector {selector!r} (codes look like L2S304; a prefix such as "
                                 f"L2S3 selects a group)")
        self.select = tuple(s.upper() for s in select)
        self.ignore = tuple(s.upper() for s in ignore)

    def reports(self, code: str) -> bool:
        if code == REWRITTEN:
            return True
        selected = max((len(s) for s in self.select if code.startswith(s)), default=-1 if self.select else 0)
        ignored = max((len(s) for s in self.ignore if code.startswith(s)), default=-1)
        return selected >= 0 and ignored < selected  # the more specific selector wins; ignore wins ties

    def __bool__(self) -> bool:
        return bool(self.select or self.ignore)
