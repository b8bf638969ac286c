"""The documentation of codes matches the code table, and every code is both
documented and produced somewhere in the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from loop2scan.codes import CODES, code_table_markdown

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "loop2scan"
CODE_RE = re.compile(r"^L2S\d{3}$")
ALWAYS_PRODUCED = {"L2S000", "L2S001", "L2S002"}  # rewritten / not a candidate / skipped


def _code_literals(path: Path) -> set[str]:
    """Every string constant of ``path`` that is a code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and CODE_RE.match(n.value)}


def _decline_codes(path: Path) -> set[str]:
    """First arguments of ``Decline("L2S...", ...)`` calls in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.func, ast.Name) and node.func.id == "Decline":
            out.add(node.args[0].value)
    return out


def _analysis_files() -> list[Path]:
    files = sorted((PACKAGE / "analysis").glob("*.py"))
    assert files, "no analysis sources found"
    return files


def _producing_files() -> list[Path]:
    """Every source file that may produce a code (all but the table itself)."""
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "codes.py"]
    files += sorted((REPO / "codemods").glob("*.py"))
    return files


def test_codes_md_contains_the_code_table_verbatim():
    doc = (REPO / "docs" / "codes.md").read_text(encoding="utf-8")
    table = code_table_markdown()
    assert table in doc
    assert doc.count("| code | name | meaning | what to do |") == 1
    assert "Every loop loop2scan looks at ends with exactly one of these codes" in doc


def test_code_table_lists_every_code_once():
    table = code_table_markdown()
    for code, c in CODES.items():
        assert code == c.code and CODE_RE.match(code)
        assert table.count(f"| `{code}` |") == 1
        assert c.name and c.title and c.fix
    assert len({c.name for c in CODES.values()}) == len(CODES), "rule names must be unique"


def test_decline_codes_in_the_analysis_exist():
    used: dict[str, set[str]] = {}
    for path in _analysis_files():
        for code in _decline_codes(path) | _code_literals(path):
            used.setdefault(code, set()).add(path.name)
    assert _decline_codes(PACKAGE / "analysis" / "iteration.py"), "expected Decline(...) calls"
    unknown = {code: sorted(files) for code, files in used.items() if code not in CODES}
    assert not unknown, f"codes used but not in loop2scan.codes.CODES: {unknown}"


def test_codes_in_the_engine_exist():
    used = _code_literals(PACKAGE / "engine.py")
    assert used, "expected codes in engine.py"
    assert used <= set(CODES), sorted(used - set(CODES))


def test_every_documented_code_is_produced():
    produced = set()
    for path in _producing_files():
        produced |= _code_literals(path)
    unknown = produced - set(CODES)
    assert not unknown, f"codes produced but not documented: {sorted(unknown)}"
    dead = sorted(set(CODES) - ALWAYS_PRODUCED - produced)
    assert not dead, f"codes documented but produced nowhere: {dead}"


def test_readme_gallery_is_what_the_tool_writes_for_the_examples():
    """The README's before/after gallery is generated from examples/ (docs/generate.py);
    a change to the emitter or to an example without regenerating it fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_l2s_generate", REPO / "docs" / "generate.py")
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rendered = gallery.render()
    assert gallery.updated(readme, rendered) == readme, "the gallery is stale: run `python docs/generate.py`"
    codes = (REPO / "docs" / "codes.md").read_text(encoding="utf-8")
    assert gallery.codes_md(codes) == codes, "docs/codes.md is stale: run `python docs/generate.py`"
    # one entry per example the tool changes, with code before and after
    assert rendered.count("#### `examples/") == 8
    assert rendered.count("jax.lax.scan(") >= 5
    assert "scan_layers(" in rendered  # the torch_xla decoder
    assert "functional_call(self.cell" in rendered  # the torch_xla GRU
