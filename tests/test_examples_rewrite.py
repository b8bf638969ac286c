"""The README's main job: loop2scan rewrites every example, and the rewritten
programs compute what the originals compute (run as scripts too)."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_tree_close, load

from loop2scan.layout import stack_layers

os.environ.setdefault("PJRT_DEVICE", "CPU")  # the torch_xla example, run as a script, on the CPU unless set
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED_REWRITES = {"jax_rnn.py": 1, "jax_lstm.py": 1, "jax_cumulative.py": 2, "jax_mlp.py": 1, "nnx_decoder.py": 1,
                     "nnx_gru.py": 1, "torch_decoder.py": 1, "torch_gru.py": 1}
TARGETS = {"nnx_decoder.py": "nnx.scan(", "nnx_gru.py": "nnx.scan(", "torch_decoder.py": "scan_layers(",
           "torch_gru.py": "= scan("}  # else jax.lax.scan


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "examples"
    shutil.copytree(EXAMPLES, out)
    proc = subprocess.run([sys.executable, "-m", "loop2scan", "rewrite", str(out), "--write", "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_every_example_is_rewritten(rewritten):
    import json

    out, report = rewritten
    data = json.loads(report)
    counts = {Path(f["path"]).name: sum(1 for loop in f["loops"] if loop["status"] == "rewritten")
              for f in data["files"]}
    for name, n in EXPECTED_REWRITES.items():
        assert counts[name] == n, (name, counts)
        assert TARGETS.get(name, "jax.lax.scan(") in (out / name).read_text()


@pytest.mark.parametrize("stem, fn, make", [
    ("jax_rnn", "rnn", lambda m: m.example_inputs(seed=1)),
    ("jax_rnn", "loss", lambda m: m.example_inputs(seed=2, steps=1)),
    ("jax_lstm", "lstm", lambda m: m.example_inputs(seed=3)),
    ("jax_cumulative", "discounted_returns", lambda m: m.discounted_returns_inputs(seed=4)),
    ("jax_cumulative", "running_energy", lambda m: m.running_energy_inputs(seed=5)),
])
def test_rewritten_examples_match(rewritten, stem, fn, make):
    out, _ = rewritten
    a = load((EXAMPLES / f"{stem}.py").read_text())
    b = load((out / f"{stem}.py").read_text())
    args = make(a)
    assert_tree_close(getattr(a, fn)(*args), getattr(b, fn)(*args))
    assert_tree_close(jax.jit(getattr(a, fn))(*args), jax.jit(getattr(b, fn))(*args))


def test_rewritten_mlp_matches_in_the_stacked_layout(rewritten):
    out, _ = rewritten
    a = load((EXAMPLES / "jax_mlp.py").read_text())
    b = load((out / "jax_mlp.py").read_text())
    params_a, x = a.example_inputs(seed=6)
    params_b, x_b = b.example_inputs(seed=6)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_b))
    stacked = stack_layers(params_a)
    for leaf_a, leaf_b in zip(jax.tree.leaves(stacked), jax.tree.leaves(params_b)):
        assert np.asarray(leaf_a).tobytes() == np.asarray(leaf_b).tobytes()
    assert_tree_close(a.loss(params_a, x), b.loss(params_b, x))
    ga = jax.grad(a.loss)(params_a, x)
    gb = jax.grad(b.loss)(params_b, x)
    assert_tree_close(jax.tree.map(lambda *leaves: jnp.stack(leaves), *ga), gb, 1e-4, 1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED_REWRITES))
def test_rewritten_examples_run_as_scripts(rewritten, name):
    out, _ = rewritten
    original = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True)
    new = subprocess.run([sys.executable, str(out / name)], capture_output=True, text=True)
    assert _ran_to_the_end(original) and _ran_to_the_end(new), new.stderr
    assert_same_printout(original.stdout, new.stdout)


def _ran_to_the_end(proc: subprocess.CompletedProcess) -> bool:
    """Exit 0, or the one abort torch_xla's runtime threads can raise now and
    then after the script's last statement, at the interpreter's shutdown
    (its printout, compared next, is then complete)."""
    if proc.returncode == 0:
        return True
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode == -signal.SIGABRT and last == "terminate called without an active exception"


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def assert_same_printout(want: str, got: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """The same printed text, numbers compared as numbers (a float printed as
    ``0.11512661`` on one machine may be ``0.1151266`` on another)."""
    assert _NUMBER.sub("#", want) == _NUMBER.sub("#", got), (want, got)
    for a, b in zip(_NUMBER.findall(want), _NUMBER.findall(got)):
        assert math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol), (a, b, want, got)


def test_printouts_compare_numbers_as_numbers():
    assert_same_printout("loss: 0.11512661\n", "loss: 0.1151266\n")
    with pytest.raises(AssertionError):
        assert_same_printout("loss: 0.1151\n", "loss: 0.1152\n")
    with pytest.raises(AssertionError):
        assert_same_printout("shape: (3, 4)\n", "shape: (4, 3, 1)\n")
