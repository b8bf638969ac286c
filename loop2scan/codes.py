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

__all__ = ["CODES", "Code", "NOT_CANDIDATE", "REWRITTEN", "SKIPPED", "code_table_markdown"]

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
        lines.append(f"| `{c.code}` | {c.name} | {c.title} | {c.fix} |")
    return "\n".join(lines) + "\n"
