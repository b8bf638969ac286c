"""Emitted code runs on the JAX version the project targets: taken from the
configuration, the declared dependencies or the installed metadata (never by
importing JAX); older targets get older spellings, too old a target a decline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import load
from loop2scan import versions
from loop2scan.cli import main
from loop2scan.versions import TargetVersion, declared, parse_version, target_version

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_parse_version():
    assert parse_version("0.4.25") == (0, 4, 25)
    assert parse_version("0.4.26rc1") == (0, 4, 26)
    assert parse_version("v1.2") == (1, 2)
    assert parse_version("latest") is None


@pytest.mark.parametrize("requirement, lowest", [
    ("jax>=0.4.20", (0, 4, 20)),
    ("jax >= 0.4.20, <0.5", (0, 4, 20)),
    ("jax[cuda12]==0.4.26", (0, 4, 26)),
    ("JAX~=0.4.14", (0, 4, 14)),
    ("jax>0.4.1; python_version >= '3.10'", (0, 4, 1)),
    ("jax", None),
    ("jax<0.5", None),
    ("jax==0.4.*", None),
    ("jaxlib>=0.4.30", None),
    ("jaxtyping>=0.2", None),
])
def test_lowest_version_a_requirement_allows(requirement, lowest):
    assert declared({"project": {"dependencies": [requirement]}}, "jax") == lowest


def test_declared_takes_the_lowest_over_every_group():
    data = {"project": {"dependencies": ["numpy"], "optional-dependencies": {
        "cpu": ["jax>=0.4.30"], "old": ["jax>=0.4.20"], "docs": ["sphinx"]}}}
    assert declared(data, "jax") == (0, 4, 20)
    assert declared({}, "jax") is None


def test_configuration_then_dependencies_then_installed(tmp_path, monkeypatch):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "p"\ndependencies = ["jax>=0.4.20"]\n')
    assert target_version("jax", "0.4.10", str(pyproject)) == TargetVersion("jax", (0, 4, 10), "configuration")
    assert target_version("jax", None, str(pyproject)) == TargetVersion("jax", (0, 4, 20), "dependencies")
    monkeypatch.setattr(versions, "installed", lambda package: (0, 9, 1))
    assert target_version("jax", None, None) == TargetVersion("jax", (0, 9, 1), "installed")
    monkeypatch.setattr(versions, "installed", lambda package: None)
    unknown = target_version("jax", None, None)
    assert unknown.version is None and "newest constructs" in unknown.describe()


def test_installed_version_comes_from_metadata_without_importing(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "jax", raising=False)
    assert versions.installed("jax") is not None
    assert "jax" not in sys.modules
    assert versions.installed("no-such-package-l2s") is None


def _project(tmp_path: Path, pyproject: str) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "layers.py").write_text((GOLDEN / "layer_builders.py").read_text())
    return tmp_path / "layers.py"


def test_an_older_target_gets_the_tree_util_spelling_and_it_computes_the_same(tmp_path, monkeypatch):
    path = _project(tmp_path, '[project]\nname = "p"\ndependencies = ["jax>=0.4.20"]\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["rewrite", "layers.py", "--write", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["target_versions"] == {"jax": {"version": "0.4.20", "source": "dependencies"}}
    new = path.read_text()
    assert "jax.tree_util.tree_map(" in new and "jax.tree.map(" not in new
    original, rewritten = load((GOLDEN / "layer_builders.py").read_text()), load(new)
    for fn in ("run_residual", "run_gated"):
        for args in original.example_inputs()[fn]:
            np.testing.assert_allclose(np.asarray(getattr(rewritten, fn)(*args)),
                                       np.asarray(getattr(original, fn)(*args)), rtol=1e-5, atol=1e-6)


def test_a_newer_target_gets_jax_tree(tmp_path, monkeypatch):
    _project(tmp_path, '[project]\nname = "p"\ndependencies = ["jax>=0.4.30"]\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["rewrite", "layers.py"])
    assert result.exit_code == 1 and "jax.tree.map(" in result.stdout and "tree_util" not in result.stdout


def test_a_target_without_scan_is_declined_with_a_code(tmp_path, monkeypatch):
    _project(tmp_path, '[tool.loop2scan]\ntarget-versions = { jax = "0.1.70" }\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["rewrite", "layers.py", "--format", "json"])
    assert result.exit_code == 0
    codes = {lp["code"] for lp in json.loads(result.stdout)["files"][0]["loops"]}
    assert "L2S603" in codes and "L2S000" not in codes
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\ntarget-versions = { torch = "2.9" }\n')
    result = CliRunner().invoke(main, ["rewrite", "layers.py"])
    assert result.exit_code == 2 and "known: jax" in result.stderr


def test_the_report_says_when_no_version_was_found(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "layers.py").write_text((GOLDEN / "layer_builders.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(versions, "installed", lambda package: None)
    result = CliRunner().invoke(main, ["rewrite", "layers.py"])
    assert result.exit_code == 1
    assert "note: no jax version found" in result.stderr and "jax.tree.map(" in result.stdout
