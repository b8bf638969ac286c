"""The emitted code reads like code a careful JAX engineer would write.

* ``ruff format`` (the formatter most JAX projects run; black agrees on these
  forms) changes nothing the tool wrote in any golden expected file: every line
  the formatter would change in the expected output is a line the user wrote
  that the formatter changes in the input too;
* lines fit the configured line length; no ``outputs = outputs``, no
  ``x_t = xs_t`` aliases, no ``len(range(...))``, no ``(...)[0]`` indexing of
  the scan's results;
* imports go next to the module's other ``jax`` imports; inside JAX's own
  source tree none are added.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name[:-3] for p in GOLDEN.glob("*.py") if not p.name.endswith(".expected.py"))


def _ruff() -> str | None:
    here = Path(sys.executable).parent / ("ruff.exe" if os.name == "nt" else "ruff")
    return str(here) if here.exists() else shutil.which("ruff")


def ruff_format(text: str, line_length: int = 88) -> str:
    ruff = _ruff()
    assert ruff is not None, "ruff is not installed (it is in the `dev` extra)"
    out = subprocess.run([ruff, "format", "--isolated", "--line-length", str(line_length), "-"],
                         input=text.encode("utf-8"), capture_output=True, check=True)
    return out.stdout.decode("utf-8")


def _touched(lines: list[str], formatted: list[str]) -> tuple[set[int], set[int]]:
    """Indices of ``lines`` the formatter changes or removes, and the positions
    where it inserts lines."""
    changed: set[int] = set()
    inserted: set[int] = set()
    sm = difflib.SequenceMatcher(None, lines, formatted, autojunk=False)
    for op, i1, i2, _, _ in sm.get_opcodes():
        if op in ("replace", "delete"):
            changed.update(range(i1, i2))
        elif op == "insert":
            inserted.add(i1)
    return changed, inserted


def formatter_disagreements(source: str, output: str, line_length: int = 88) -> list[str]:
    """What the formatter would change in ``output`` that it would not change in
    ``source`` (the lines the user wrote as they were)."""
    src = source.splitlines()
    out = output.splitlines()
    src_changed, src_inserted = _touched(src, ruff_format(source, line_length).splitlines())
    out_changed, out_inserted = _touched(out, ruff_format(output, line_length).splitlines())
    touched_src_text = {src[i].strip() for i in src_changed if src[i].strip()}
    # the user's lines the formatter leaves alone in the input
    fine_src_text = {line.strip() for i, line in enumerate(src) if i not in src_changed}
    problems = []

    def nonblank_neighbours(lines, i):
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), None)
        after = next((lines[j].strip() for j in range(i, len(lines)) if lines[j].strip()), None)
        return before, after

    src_pairs_touched = set()
    for i in src_inserted | {i for i in src_changed if not src[i].strip()}:
        src_pairs_touched.add(nonblank_neighbours(src, i if i in src_inserted else i))
    for i in sorted(out_changed):
        text = out[i].strip()
        if not text:
            if nonblank_neighbours(out, i) not in src_pairs_touched:
                problems.append(f"line {i + 1}: the formatter removes this blank line")
            continue
        if text in touched_src_text:
            continue
        if text in fine_src_text:
            problems.append(f"line {i + 1}: the formatter changes `{text}` here but not in the input")
            continue
        # a user's line the tool edited (`xs[t]` -> `xs_t`): fine when the input's line was already
        # one the formatter changes
        best = max(touched_src_text, key=lambda s: difflib.SequenceMatcher(None, s, text).ratio(), default=None)
        if best is not None and difflib.SequenceMatcher(None, best, text).ratio() >= 0.85:
            continue
        problems.append(f"line {i + 1}: the formatter changes the tool's `{text}`")
    for i in sorted(out_inserted):
        if nonblank_neighbours(out, i) not in src_pairs_touched:
            problems.append(f"line {i + 1}: the formatter inserts a line before `{out[i].strip() if i < len(out) else ''}`")
    return problems


@pytest.mark.parametrize("case", CASES)
def test_formatter_agrees_with_the_golden_output(case):
    source = (GOLDEN / f"{case}.py").read_text(encoding="utf-8")
    expected = (GOLDEN / f"{case}.expected.py").read_text(encoding="utf-8")
    problems = formatter_disagreements(source, expected)
    assert not problems, f"{case}: ruff format disagrees with the emitted code:\n" + "\n".join(problems)


@pytest.mark.parametrize("case", CASES)
def test_emitted_lines_fit_the_line_length(case):
    source = (GOLDEN / f"{case}.py").read_text(encoding="utf-8")
    expected = (GOLDEN / f"{case}.expected.py").read_text(encoding="utf-8")
    src_lines = {line.strip() for line in source.splitlines()}
    long = [line for line in expected.splitlines() if len(line) > 88 and line.strip() not in src_lines
            and difflib.get_close_matches(line.strip(), src_lines, 1, 0.85) == []]
    assert not long, "lines the tool wrote exceed 88 characters:\n" + "\n".join(long)
    for bad in ("len(range(", "= outputs\n", ")[0]\n", ")[1]\n"):
        assert bad not in expected.replace("\r\n", "\n") or bad in source, f"{case}: `{bad.strip()}` in the output"
