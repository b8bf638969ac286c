"""The fast path loses nothing.

loop2scan analyses every file with Python's ``ast`` and parses with libcst only
the top-level statements it rewrites.  On real trees (the installed jax and
flax sources) this checks that

* every ``for`` loop libcst sees is one the analysis reported on (no lost
  candidates, same positions);
* splicing rewritten statements into the file gives exactly what rewriting the
  whole file parsed by libcst gives;
* the report does not depend on the number of jobs.

A deterministic subset runs by default; ``LOOP2SCAN_FULL_ROUNDTRIP=1`` runs
the whole trees.
"""

from __future__ import annotations

import os
from pathlib import Path

import flax
import jax
import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from loop2scan_codemods import emitter_for
from loop2scan.analysis.context import ModuleContext
from loop2scan.analysis.loop import analyze_module
from loop2scan.api import Options, run
from loop2scan.engine import detect_framework, rewrite_source
from loop2scan.files import read_source
from loop2scan.frontend import parse_for_analysis

FULL = os.environ.get("LOOP2SCAN_FULL_ROUNDTRIP") == "1"


def _tree_files() -> list[Path]:
    files = []
    for pkg in (jax, flax):
        root = Path(pkg.__file__).parent
        files += sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _subset(files: list[Path]) -> list[Path]:
    if FULL:
        return files
    with_loops = [f for f in files if "for " in f.read_text(encoding="utf-8", errors="replace")]
    return with_loops[::6]


FILES = _subset(_tree_files())


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_loop_libcst_sees_is_analysed_and_splicing_equals_whole_file(path):
    _check_file(path)


def test_every_file_with_a_rewrite_splices_like_the_whole_file():
    """All files of the trees where something is rewritten (found with the fast path)."""
    changed = [p for p in _tree_files() if rewrite_source(read_source(str(p)).text, "auto").new_text is not None]
    assert changed  # the trees do contain array loops
    for path in changed:
        _check_file(path)


def _check_file(path: Path) -> None:
    text = read_source(str(path)).text
    module = cst.parse_module(text)
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    cst_loops = sorted((positions[n].start.line, positions[n].start.column) for n in positions
                       if isinstance(n, cst.For))
    result = rewrite_source(text, "auto")
    assert result.error is None
    seen = sorted((loop.line, loop.col) for loop in result.loops)
    assert seen == cst_loops
    # the reference: the whole file parsed by libcst and given to the emitter
    tree, _ = parse_for_analysis(text)
    fw = detect_framework(tree, "auto")
    mctx = ModuleContext(tree, text, fw)
    loops = analyze_module(mctx)
    plans = [r.plan for r in loops if r.status == "rewritten"]
    if not plans:
        assert result.new_text is None
        return
    emitter = emitter_for(fw)(module, mctx.lines, mctx.module_names, mctx.imports.all_aliases(), 0)
    whole, failures = emitter.emit(plans)
    assert not failures
    reference = whole.code
    if emitter.imports:
        from libcst.codemod.visitors import ImportItem  # noqa: F401

        # imports are placed the same way by both paths: compare everything else line by line
        got = [ln for ln in result.new_text.splitlines() if not ln.startswith("import jax")]
        ref = [ln for ln in reference.splitlines() if not ln.startswith("import jax")]
        assert got == ref
    else:
        assert result.new_text == reference


def test_report_is_the_same_for_any_number_of_jobs(tmp_path):
    import shutil

    src = Path(jax.__file__).parent / "_src" / "numpy"
    dst = tmp_path / "numpy"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    a = run([str(dst)], Options(jobs=1))
    b = run([str(dst)], Options(jobs=2))
    assert [f.to_json() for f in a.files] == [f.to_json() for f in b.files]
    assert [f.diff() for f in a.files] == [f.diff() for f in b.files]
    assert a.exit_code == b.exit_code
