"""The pre-commit hooks of ``.pre-commit-hooks.yaml``, run by the real
``pre-commit`` in a scratch git repository whose config points at a copy of
this checkout (pre-commit installs loop2scan from it into a hook environment
of its own, with loop2scan's base dependencies only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMALL_RNN

REPO = Path(__file__).resolve().parent.parent

RNN = SMALL_RNN

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def _run(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _hook_repo(tmp: Path, env: dict) -> str:
    """A git repository holding this checkout's package (what pre-commit clones); its commit."""
    repo = tmp / "hooks"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(REPO / name, repo / name)
    for package in ("loop2scan", "codemods"):
        shutil.copytree(REPO / package, repo / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "hooks"]):
        p = _run(args, repo, env)
        assert p.returncode == 0, p.stderr
    return _run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()


def _config(project: Path, hooks: Path, rev: str, hook: str) -> None:
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n"
        f"  - repo: {hooks}\n"
        f"    rev: {rev}\n"
        f"    hooks:\n"
        f"      - id: {hook}\n"
        f"        args: [--framework, jax]\n")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precommit")
    env = dict(os.environ, **GIT_ENV, PRE_COMMIT_HOME=str(tmp / "cache"), HOME=str(tmp))
    env.pop("PYTHONPATH", None)  # the hook runs the loop2scan pre-commit installed, not this checkout
    rev = _hook_repo(tmp, env)
    project = tmp / "project"
    project.mkdir()
    assert _run(["git", "init", "-q"], project, env).returncode == 0
    _config(project, tmp / "hooks", rev, "loop2scan")
    p = _run([sys.executable, "-m", "pre_commit", "install"], project, env)
    assert p.returncode == 0, p.stdout + p.stderr
    p = _run([sys.executable, "-m", "pre_commit", "install-hooks"], project, env)
    assert p.returncode == 0, p.stdout + p.stderr
    return project, tmp, rev, env


def _commit(project: Path, env: dict, *files: str) -> subprocess.CompletedProcess:
    assert _run(["git", "add", *files], project, env).returncode == 0
    return _run(["git", "commit", "-q", "-m", "change"], project, env)


def test_preview_blocks_the_commit_shows_the_diff_and_touches_nothing(scratch):
    project, _, _, env = scratch
    (project / "rnn.py").write_text(RNN)
    p = _commit(project, env, ".pre-commit-config.yaml", "rnn.py")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "--- a/rnn.py" in out and "+++ b/rnn.py" in out and "jax.lax.scan" in out, out
    assert (project / "rnn.py").read_text() == RNN
    _run(["git", "reset", "-q"], project, env)


def test_fix_hook_rewrites_then_the_next_commit_passes(scratch):
    project, tmp, rev, env = scratch
    (project / "rnn.py").write_text(RNN)
    _config(project, tmp / "hooks", rev, "loop2scan-fix")
    p = _commit(project, env, ".pre-commit-config.yaml", "rnn.py")
    assert p.returncode != 0, p.stdout + p.stderr  # files were modified by the hook: re-stage them
    fixed = (project / "rnn.py").read_text()
    assert fixed != RNN and "jax.lax.scan" in fixed
    compile(fixed, "rnn.py", "exec")
    p = _commit(project, env, "rnn.py", ".pre-commit-config.yaml")
    assert p.returncode == 0, p.stdout + p.stderr
    # the preview hook agrees: nothing left to rewrite
    _config(project, tmp / "hooks", rev, "loop2scan")
    p = _commit(project, env, ".pre-commit-config.yaml")
    assert p.returncode == 0, p.stdout + p.stderr


def test_skip_comment_passes_and_syntax_error_fails_with_one_line(scratch):
    project, tmp, rev, env = scratch
    _config(project, tmp / "hooks", rev, "loop2scan")
    (project / "skipped.py").write_text(
        RNN.replace("for t in range(xs.shape[0]):", "for t in range(xs.shape[0]):  # loop2scan: skip"))
    p = _commit(project, env, ".pre-commit-config.yaml", "skipped.py")
    assert p.returncode == 0, p.stdout + p.stderr
    (project / "bad.py").write_text("def f(:\n    pass\n")
    p = _commit(project, env, "bad.py")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    lines = [line for line in out.splitlines() if "bad.py" in line]
    assert len(lines) == 1 and "syntax error" in lines[0], out
    assert "Traceback" not in out
    _run(["git", "reset", "-q"], project, env)
    (project / "bad.py").unlink()


def test_tests_are_left_alone_in_pre_commit(scratch):
    """pre-commit names every staged file; test files stay out as in a directory run."""
    project, tmp, rev, env = scratch
    _config(project, tmp / "hooks", rev, "loop2scan")
    (project / "tests").mkdir(exist_ok=True)
    (project / "tests" / "test_rnn.py").write_text(RNN)
    p = _commit(project, env, ".pre-commit-config.yaml", "tests/test_rnn.py")
    assert p.returncode == 0, p.stdout + p.stderr
