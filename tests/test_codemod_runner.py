"""The JAX emitter run through libcst's own codemod runner.

The emitters of ``codemods/`` install as the package ``loop2scan_codemods``.
``.libcst.codemod.yaml`` at the repository root lists it, so
``python -m libcst.tool codemod jax_scan.JaxScanCommand FILE`` run from the
root finds the command; a user's project lists it in its own
``.libcst.codemod.yaml`` the same way.  The file is a copy in ``tmp_path``;
afterwards it must hold a ``jax.lax.scan`` instead of the loop and compute
the same values as the original.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
T, B, D, H = 5, 3, 4, 6

RNN_SRC = '''\
"""A small Elman RNN."""
import jax
import jax.numpy as jnp


def rnn(params, xs, h0):
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)


def until(xs, h):
    for t in range(xs.shape[0]):
        h = h + xs[t]
        if t >= 2:
            break
    return h
'''


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_codemod(*paths: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # what is installed, as a user's project sees it
    return subprocess.run(
        [sys.executable, "-m", "libcst.tool", "codemod", "--no-format", "jax_scan.JaxScanCommand",
         *map(str, paths)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )


def test_a_users_project_registers_the_installed_codemods(tmp_path):
    """A project outside this repository, with a `codemods` package of its own,
    lists `loop2scan_codemods` in its `.libcst.codemod.yaml`."""
    project = tmp_path / "user_project"
    (project / "codemods").mkdir(parents=True)
    (project / "codemods" / "__init__.py").write_text("# the user's own codemods\n")
    (project / ".libcst.codemod.yaml").write_text(
        "generated_code_marker: '@generated'\nformatter: []\nblacklist_patterns: []\n"
        "modules:\n  - 'codemods'\n  - 'loop2scan_codemods'\nrepo_root: '.'\n")
    target = project / "model.py"
    target.write_text(RNN_SRC, encoding="utf-8")
    p = _run_codemod(Path("model.py"), cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    new = target.read_text(encoding="utf-8")
    assert "jax.lax.scan(" in new and not any(isinstance(n, ast.For) for n in ast.walk(_function(new, "rnn")))
    p = subprocess.run([sys.executable, "-m", "libcst.tool", "list"], cwd=project, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert "jax_scan.JaxScanCommand" in p.stdout, p.stdout + p.stderr


def _function(source: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(source)
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def test_libcst_runner_rewrites_the_rnn(tmp_path):
    assert (REPO / ".libcst.codemod.yaml").is_file()
    original = tmp_path / "orig" / "rnn_original.py"
    target = tmp_path / "work" / "rnn_model.py"
    for path in (original, target):
        path.parent.mkdir(parents=True)
        path.write_text(RNN_SRC, encoding="utf-8")

    p = _run_codemod(target)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Failed to codemod 0 files" in p.stderr, p.stderr

    new = target.read_text(encoding="utf-8")
    assert new != RNN_SRC
    assert "jax.lax.scan(" in new
    rnn = _function(new, "rnn")
    assert not any(isinstance(n, ast.For) for n in ast.walk(rnn)), new
    # The declined loop (`break`) is left exactly as it was.
    until = _function(new, "until")
    assert any(isinstance(n, ast.For) for n in ast.walk(until))
    assert ast.unparse(until) == ast.unparse(_function(RNN_SRC, "until"))
    assert "L2S101" in p.stderr  # the runner's warning for the declined loop
    assert original.read_text(encoding="utf-8") == RNN_SRC

    a = _import(original, "_l2s_codemod_original").rnn
    b = _import(target, "_l2s_codemod_rewritten").rnn
    rng = np.random.default_rng(0)
    for steps in (T, 1):
        params = {
            "wx": rng.standard_normal((D, H)).astype(np.float32) / 2,
            "wh": rng.standard_normal((H, H)).astype(np.float32) / 3,
            "b": rng.standard_normal((H,)).astype(np.float32) / 10,
        }
        xs = rng.standard_normal((steps, B, D)).astype(np.float32)
        h0 = rng.standard_normal((B, H)).astype(np.float32)
        ha, hsa = a(params, xs, h0)
        hb, hsb = b(params, xs, h0)
        assert np.shape(hsb) == (steps, B, H) and np.shape(hb) == (B, H)
        np.testing.assert_allclose(np.asarray(hb), np.asarray(ha), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(hsb), np.asarray(hsa), rtol=1e-5, atol=1e-6)

    # Running the codemod again finds nothing left to change.
    p = _run_codemod(target)
    assert p.returncode == 0, p.stderr
    assert target.read_text(encoding="utf-8") == new
