"""``loop2scan rewrite --check``: every rewrite run before and after and compared.

One small package (relative imports, a method example, a factory that raises,
a carry whose shape changes) and the shipped examples (including the
parameter-list MLP, verified through the layout converter, and the torch_xla
decoder; the torch_xla backend itself: tests/test_check_torch_xla.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from loop2scan.cli import main

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """\
[tool.loop2scan.examples]
"pkg/model.py::accumulate" = "pkg/model.py::inputs"
"pkg/model.py::Model.__call__" = "pkg/model.py::model_example"
"pkg/model.py::broken" = "pkg/model.py::bad_factory"
"pkg/good.py::smooth" = { factory = "pkg/good.py::smooth_inputs", rtol = 1e-5 }
"""

MODEL = '''\
from functools import partial

import jax
import jax.numpy as jnp
from .helpers import cell


def accumulate(xs, h0):
    h = h0
    for x in xs:
        h = h + jnp.tanh(x) * 2.0
    return h


def inputs():
    # a scalar start for a carry that becomes a vector: invisible to the analysis
    return jax.random.normal(jax.random.PRNGKey(0), (5, 4)), jnp.float32(0.0)


class Model:
    def __init__(self, w):
        self.w = w

    @partial(jax.jit, static_argnums=0)
    def __call__(self, xs):
        h = jnp.zeros(self.w.shape[0])
        for x in xs:
            h = cell(h @ self.w, x)
        return h


def model_example(module):
    return {"self": module.Model(jax.random.normal(jax.random.PRNGKey(1), (3, 3))),
            "args": (jax.random.normal(jax.random.PRNGKey(2), (6, 3)),)}


def broken(xs):
    h = jnp.zeros(xs.shape[1:])
    for x in xs:
        h = jnp.sin(h) + x
    return h


def bad_factory():
    raise RuntimeError("no data here")


def unlisted(xs):
    h = jnp.zeros(xs.shape[1:])
    for x in xs:
        h = h * 0.5 + x
    return h
'''

GOOD = '''\
import jax
import jax.numpy as jnp


def smooth(xs, alpha):
    level = jnp.zeros(xs.shape[1:])
    out = []
    for x in xs:
        level = alpha * level + (1 - alpha) * x
        out.append(level)
    return jnp.stack(out, axis=1), level


def smooth_inputs():
    return jax.random.normal(jax.random.PRNGKey(3), (7, 3, 4)), jnp.float32(0.8)
'''


@pytest.fixture()
def project(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("import jax.numpy as jnp\n\n\ndef cell(h, x):\n    return jnp.tanh(h + x)\n")
    (pkg / "model.py").write_text(MODEL)
    (pkg / "good.py").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(*args):
    result = CliRunner().invoke(main, ["rewrite", *args])
    return result.exit_code, result.stdout, result.stderr


def _checks(stdout):
    data = json.loads(stdout)
    return {(Path(f["path"]).name, loop["line"]): loop["check"] for f in data["files"] for loop in f["loops"]
            if "check" in loop}


def test_check_reports_every_verdict(project):
    code, out, err = _run("pkg", "--check", "--format", "json", "--device", "cpu")
    assert code == 1  # a DIFFERS and unverified rewrites
    checks = _checks(out)
    # the shape-changing carry: runs in Python, differs in the scan; the carry is named with its cause
    lines = MODEL.splitlines()
    accumulate_line = lines.index("    for x in xs:", lines.index("def accumulate(xs, h0):")) + 1
    differs = checks[("model.py", accumulate_line)]
    assert differs["verdict"] == "differs"
    assert any("carry `h`" in d and "float32[] before, float32[4] after" in d
               and f"`h0` (line {accumulate_line - 1})" in d for d in differs["differences"])
    # a method, built from the module's own class, through a relative import
    method_line = lines.index("        for x in xs:", lines.index("class Model:")) + 1
    broken_line = lines.index("    for x in xs:", lines.index("def broken(xs):")) + 1
    method = checks[("model.py", method_line)]
    assert method["verdict"] == "verified" and method["device"] == "cpu:0"
    assert method["outputs"]["max_abs"] < 1e-5 and "gradients" in method
    assert method["compile_s"]["before"] > 0 and method["compile_s"]["after"] > 0
    assert method["run_s"]["before"] > 0 and method["run_s"]["after"] > 0
    # the factory raised: unverified, with the error
    assert checks[("model.py", broken_line)]["verdict"] == "unverified"
    assert "RuntimeError: no data here" in checks[("model.py", broken_line)]["reason"]
    # no example covers it
    unlisted_line = MODEL.splitlines().index("def unlisted(xs):") + 3
    assert checks[("model.py", unlisted_line)]["verdict"] == "unverified"
    assert "no example exercises `unlisted`" in checks[("model.py", unlisted_line)]["reason"]
    good = checks[("good.py", 8)]
    assert good["verdict"] == "verified", good


def test_check_write_writes_only_verified_files(project):
    before = (project / "pkg" / "model.py").read_text()
    code, _, err = _run("pkg", "--check", "--write", "--device", "cpu")
    assert code == 1
    assert (project / "pkg" / "model.py").read_text() == before  # it holds a rewrite that did not verify
    assert "jax.lax.scan" in (project / "pkg" / "good.py").read_text()
    assert "DIFFERS: carry `h`" in err and "unverified: the example factory" in err
    assert "not written" in err
    # now only the verified file is left to check: everything verifies, exit 0
    code, _, err = _run("pkg/good.py", "--check", "--device", "cpu")
    assert code == 0, err  # nothing left to rewrite there: nothing to verify


def test_check_exit_zero_when_every_rewrite_verifies(project):
    code, out, err = _run("pkg/good.py", "--check", "--device", "cpu")
    assert code == 0, err
    assert "verified on cpu:0" in err and "DIFFER" not in err.split("--check:")[0]


def test_tight_tolerance_turns_rounding_into_a_difference(project):
    (project / "pyproject.toml").write_text(PYPROJECT.replace('rtol = 1e-5', 'rtol = 0.0, atol = 0.0'))
    (project / "pkg" / "good.py").write_text(GOOD.replace("level = alpha * level + (1 - alpha) * x",
                                                          "level = jnp.tanh(alpha * level @ jnp.eye(4) + x)"))
    code, out, _ = _run("pkg/good.py", "--check", "--format", "json", "--device", "cpu")
    check = _checks(out)[("good.py", 8)]
    # equal to the last bit or not, the verdict follows the tolerance and names the output
    if check["verdict"] == "differs":
        assert any(d.startswith("output") or d.startswith("gradient") for d in check["differences"])
    else:
        assert check["outputs"]["max_abs"] == 0.0


def test_examples_verify_including_the_layout_change(tmp_path):
    """README: every model in examples/ verifies with --check (the MLP through the converter, the
    torch_xla decoder on the XLA device)."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "examples", proj / "examples")
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    (proj / ".git").mkdir()
    env = dict(os.environ, PJRT_DEVICE=os.environ.get("PJRT_DEVICE", "CPU"))  # torch_xla: the CPU unless set
    proc = subprocess.run([sys.executable, "-m", "loop2scan", "rewrite", "examples", "--check", "--format", "json"],
                          cwd=proj, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    data = json.loads(proc.stdout)
    verdicts = {(Path(f["path"]).name, loop["line"]): loop["check"]["verdict"]
                for f in data["files"] for loop in f["loops"] if loop["status"] == "rewritten"}
    assert len(verdicts) == 9 and set(verdicts.values()) == {"verified"}, verdicts
    mlp = next(loop for f in data["files"] if f["path"].endswith("jax_mlp.py") for loop in f["loops"]
               if loop["status"] == "rewritten")
    assert mlp["layout"]["mode"] == "stacked" and "gradients" in mlp["check"]
    decoder = next(loop["check"] for f in data["files"] if f["path"].endswith("torch_decoder.py")
                   for loop in f["loops"] if loop["status"] == "rewritten")
    assert decoder["mode"] == "eval" and decoder["gradients"]["parameters"] == 1 + 8 * 10 + 2  # every parameter


def test_example_table_errors_are_usage_errors(project):
    (project / "pyproject.toml").write_text('[tool.loop2scan.examples]\n"pkg/model.py" = "x"\n')
    code, _, err = _run("pkg", "--check")
    assert code == 2 and "<file>::" in err


def test_worker_diagnoses_tuple_carries():
    from loop2scan.check.worker import diagnose

    job = {"loops": [{"carries": ["h", "c"], "carry_inits": {"c": {"line": 3, "text": "0.0"}}}]}
    err = TypeError("scan body function carry input and carry output must have equal types, but they differ:\n\n"
                    "The input carry component carry[1] has type float32[] but the corresponding output carry "
                    "component has type float32[4], so the shapes do not match.")
    assert diagnose(err, job) == ("carry `c`: float32[] before, float32[4] after: the initial value `0.0` "
                                  "(line 3) is a scalar; initialise it with the shape and dtype it has inside "
                                  "the loop")
    assert "ValueError: boom" in diagnose(ValueError("boom"), job)


PROMOTING = '''\
import jax
import jax.numpy as jnp


def decay(xs, h):
    for x in xs:
        h = h * 0.5 + jnp.tanh(x) * jnp.float32(0.1)
    return h


def decay_inputs():
    return jax.random.normal(jax.random.PRNGKey(4), (6, 3)), jnp.zeros(3)
'''


def test_check_runs_assumed_dtypes_in_bfloat16(tmp_path, monkeypatch):
    """A carry whose dtype the code does not show is run in bfloat16 too: here a
    float32 constant promotes a bfloat16 carry in the loop, which the scan cannot
    carry; float32 inputs alone would not show it."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.loop2scan.examples]\n"promo.py::decay" = "promo.py::decay_inputs"\n')
    (tmp_path / "promo.py").write_text(PROMOTING)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run("promo.py", "--check", "--format", "json", "--device", "cpu")
    check = _checks(out)[("promo.py", 6)]
    assert code == 1 and check["verdict"] == "differs", check
    assert check["dtypes"] == {"bfloat16": "differs"}
    assert any("bfloat16" in d for d in check["differences"]), check["differences"]
    assert (tmp_path / "promo.py").read_text() == PROMOTING


def test_flax_check_verifies_the_stack_and_catches_a_wrong_one(tmp_path):
    """The NNX backend builds both models from the example factory, copies the
    original's state into the stacked layout, and compares outputs (train mode:
    dropout on), the state after the call and the gradients.  A scan over the
    layers in reverse order is caught."""
    from loop2scan import rewrite_source
    from loop2scan.check import CheckOptions, Example, check_loops

    src = (ROOT / "examples" / "nnx_decoder.py").read_text()
    path = tmp_path / "nnx_decoder.py"
    path.write_text(src)
    result = rewrite_source(src, "auto")
    assert result.framework == "flax"
    example = Example("nnx_decoder.py", "Decoder.__call__", "nnx_decoder.py::example_inputs")
    loop = next(r for r in result.loops if r.status == "rewritten")
    good = check_loops(str(path), src, result.new_text, result.loops, "flax", [example], str(tmp_path),
                       CheckOptions())[loop.line]
    assert good["verdict"] == "verified", good
    assert good["gradients"]["parameters"] > 10 and good["compile_s"]["after"] is not None
    wrong = result.new_text.replace("out_axes=nnx.Carry)", "out_axes=nnx.Carry, reverse=True)")
    assert wrong != result.new_text
    bad = check_loops(str(path), src, wrong, result.loops, "flax", [example], str(tmp_path),
                      CheckOptions())[loop.line]
    assert bad["verdict"] == "differs", bad
    assert any(d.startswith("output") for d in bad["differences"]), bad["differences"]


def _worker_ending(monkeypatch, returncode: int, stdout: str, stderr: str) -> dict:
    """What `--check` makes of a worker process that ended this way."""
    from loop2scan import check

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

    monkeypatch.setattr(check.subprocess, "run", fake_run)
    options = check.CheckOptions(device="cpu", rtol=1e-5, atol=1e-6, timeout=60)
    return check._run_worker({"root": str(ROOT)}, options)


def test_a_result_written_before_an_abort_at_exit_counts(monkeypatch):
    """A runtime's threads can abort the worker's shutdown after the result
    line is out: the comparisons are finished and their verdicts stand."""
    result = {"examples": [{"target": "m.py::f", "verdict": "differs", "differences": ["y: 1.0"]}]}
    out = _worker_ending(monkeypatch, -6, "log line\n" + json.dumps(result) + "\n",
                         "terminate called without an active exception\n")
    assert out == result


@pytest.mark.parametrize("returncode, stdout, expected", [
    (-6, "", "the check process failed: terminate called without an active exception"),
    (-6, '{"examples": [\n', "the check process failed: terminate called without an active exception"),
    (0, '{"examples": [\n', "the check process wrote an unreadable result"),
])
def test_a_worker_that_ends_without_a_result_is_unverified(monkeypatch, returncode, stdout, expected):
    out = _worker_ending(monkeypatch, returncode, stdout, "terminate called without an active exception\n")
    assert out == {"error": expected}


def test_a_worker_error_is_passed_on(monkeypatch):
    out = _worker_ending(monkeypatch, 0, '{"error": "torch_xla does not start"}\n', "")
    assert out == {"error": "torch_xla does not start"}
