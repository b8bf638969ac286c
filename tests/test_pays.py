"""Where a scan pays: which loops are left alone on purpose, and the context a
function runs in (traced, eager, unknown) as the project's callers show it.

* test files are left out of directory runs (and processed when named);
* constant trip counts below ``min-trip-count`` are left alone (``L2S701``),
  from ``[tool.loop2scan]`` or the command line;
* ``eager = "skip"`` declines every loop with no transformation seen (``L2S702``);
* the context of a function follows its callers across modules: decorators,
  functions given to transformations, callers under them, module top level,
  constructors, public names of a published library.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import rewrite
from loop2scan.api import Options, run
from loop2scan.cli import main

LOOP = """\
import jax
import jax.numpy as jnp


@jax.jit
def rnn(w, xs, h):
    for x in xs:
        h = jnp.tanh(w @ h + x)
    return h
"""


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def loops_by_file(stdout: str) -> dict[str, list[tuple[int, str]]]:
    data = json.loads(stdout)
    return {Path(f["path"]).as_posix(): [(lp["line"], lp["code"]) for lp in f["loops"]] for f in data["files"]}


# ------------------------------------------------------------------ test files
def test_directory_runs_leave_test_files_out(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"pkg/model.py": LOOP, "pkg/test_model.py": LOOP, "pkg/model_test.py": LOOP,
                     "tests/helpers.py": LOOP, "pkg/tests/deep.py": LOOP, "pkg/testing.py": LOOP})
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("rewrite", ".", "--format", "json")
    assert code == 1
    assert sorted(loops_by_file(out)) == ["pkg/model.py", "pkg/testing.py"]
    # a test file named on the command line is processed, as in ruff
    code, out, _ = invoke("rewrite", "pkg/test_model.py", "tests/helpers.py", "--format", "json")
    assert sorted(loops_by_file(out)) == ["pkg/test_model.py", "tests/helpers.py"]
    # --include-tests, or include-tests in the configuration, brings them back
    code, out, _ = invoke("rewrite", ".", "--format", "json", "--include-tests")
    assert len(loops_by_file(out)) == 6
    (tmp_path / "pyproject.toml").write_text("[tool.loop2scan]\ninclude-tests = true\n")
    code, out, _ = invoke("rewrite", ".", "--format", "json")
    assert len(loops_by_file(out)) == 6
    # test-files says what a test file is
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\ntest-files = ["testing.py"]\n')
    code, out, _ = invoke("rewrite", ".", "--format", "json")
    assert "pkg/testing.py" not in loops_by_file(out) and "pkg/test_model.py" in loops_by_file(out)


def test_force_exclude_applies_the_patterns_to_files_named_explicitly(tmp_path, monkeypatch):
    """pre-commit names every staged file: --force-exclude (or force-exclude in the
    configuration) leaves test files and excluded paths out as a directory run does."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"pkg/model.py": LOOP, "pkg/test_model.py": LOOP, "tests/helpers.py": LOOP,
                     "build/gen.py": LOOP, "pkg/vendored/lib.py": LOOP})
    monkeypatch.chdir(tmp_path)
    named = ["pkg/model.py", "pkg/test_model.py", "tests/helpers.py", "build/gen.py", "pkg/vendored/lib.py"]
    code, out, _ = invoke("rewrite", *named, "--format", "json")
    assert len(loops_by_file(out)) == 5
    code, out, _ = invoke("rewrite", *named, "--format", "json", "--force-exclude")
    assert sorted(loops_by_file(out)) == ["pkg/model.py", "pkg/vendored/lib.py"]
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\nforce-exclude = true\n'
                                             'extend-exclude = ["vendored"]\n')
    code, out, _ = invoke("rewrite", *named, "--format", "json")
    assert sorted(loops_by_file(out)) == ["pkg/model.py"]
    # with --include-tests the test files come back; excluded paths do not
    code, out, _ = invoke("rewrite", *named, "--format", "json", "--include-tests")
    assert sorted(loops_by_file(out)) == ["pkg/model.py", "pkg/test_model.py", "tests/helpers.py"]
    (tmp_path / "pyproject.toml").write_text("[tool.loop2scan]\nforce-exclude = 1\n")
    code, _, err = invoke("rewrite", "pkg/model.py")
    assert code == 2 and "force-exclude must be true or false" in err


def test_a_test_file_still_counts_as_a_caller(tmp_path):
    """Left out of the run, a test that calls a function eagerly still shows its context."""
    write(tmp_path, {
        "pyproject.toml": "[project]\nname = 'p'\n",
        "pkg/__init__.py": "",
        "pkg/model.py": """
            import jax.numpy as jnp

            def _rnn(xs, h, cell):
                for x in xs:
                    h = jnp.tanh(cell(h) + x)
                return h
            """,
        "tests/test_model.py": """
            import jax.numpy as jnp
            from pkg.model import _rnn

            def test_rnn():
                assert _rnn(jnp.ones((5, 3)), jnp.zeros(3), lambda h: h).shape == (3,)
            """,
    })
    report = run([str(tmp_path / "pkg")], Options(jobs=1))
    (loop,) = [lp for f in report.files for lp in f.loops]
    assert loop.code == "L2S702"
    assert "test_model.py" in loop.message and "`test_rnn`" in loop.message


# ------------------------------------------------------------------ short loops
SHORT = """\
import jax
import jax.numpy as jnp


@jax.jit
def refine(a, v):
    for _ in range(3):
        v = a @ v
    return v
"""


def test_min_trip_count_from_configuration_and_command_line(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"m.py": SHORT})
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("rewrite", "m.py", "--format", "json")
    assert code == 0 and loops_by_file(out)["m.py"] == [(7, "L2S701")]
    code, out, _ = invoke("rewrite", "m.py", "--format", "json", "--min-trip-count", "3")
    assert code == 1 and loops_by_file(out)["m.py"] == [(7, "L2S000")]
    (tmp_path / "pyproject.toml").write_text("[tool.loop2scan]\nmin-trip-count = 2\n")
    code, out, _ = invoke("rewrite", "m.py", "--format", "json")
    assert loops_by_file(out)["m.py"] == [(7, "L2S000")]
    # the command line wins over the file
    code, out, _ = invoke("rewrite", "m.py", "--format", "json", "--min-trip-count", "8")
    assert loops_by_file(out)["m.py"] == [(7, "L2S701")]
    for bad in ("-1", '"4"', "true"):
        (tmp_path / "pyproject.toml").write_text(f"[tool.loop2scan]\nmin-trip-count = {bad}\n")
        code, _, err = invoke("rewrite", "m.py")
        assert code == 2 and "min-trip-count" in err


def test_constant_trip_counts_seen_through_names_and_tables():
    src = """\
import jax
import jax.numpy as jnp

STEPS = 2
TABLE = (0.5, 0.25, 0.125)


@jax.jit
def f(a, v, xs):
    n = STEPS + 1
    for _ in range(n):
        v = a @ v
    for c in jnp.asarray(TABLE):
        v = v * c + 1.0
    for t in range(len(TABLE) - 1, -1, -1):
        v = v + xs[t]
    for _ in range(xs.shape[0]):
        v = jnp.tanh(v)
    return v
"""
    result = rewrite(src)
    assert [(lp.line, lp.code) for lp in result.loops] == [
        (11, "L2S701"), (13, "L2S701"), (15, "L2S701"), (17, "L2S000")]
    assert "3 steps" in result.loops[0].message


# ------------------------------------------------------------------ eager = "skip"
def test_eager_skip_declines_loops_without_a_transformation(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"m.py": LOOP + textwrap.dedent("""


        def eager_rnn(w, xs, h):
            for x in xs:
                h = jnp.tanh(w @ h + x)
            return h
        """)})
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("rewrite", "m.py", "--format", "json")
    assert loops_by_file(out)["m.py"] == [(7, "L2S000"), (14, "L2S000")]
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\neager = "skip"\n')
    code, out, _ = invoke("rewrite", "m.py", "--format", "json")
    assert loops_by_file(out)["m.py"] == [(7, "L2S000"), (14, "L2S702")]
    data = json.loads(out)
    assert "eager = \"skip\"" in data["files"][0]["loops"][1]["message"]
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\neager = "never"\n')
    code, _, err = invoke("rewrite", "m.py")
    assert code == 2 and "eager must be one of" in err


CELL = """
        import jax.numpy as jnp


        class Cell:
            def __init__(self, w):
                self.w = w

            def run(self, xs, h):
                for x in xs:
                    h = jnp.tanh(self.w @ h + x)
                return h
        """


def test_eager_closure_keeps_closure_steps_where_no_transformation_is_seen(tmp_path, monkeypatch):
    """`eager = "closure"`: a method using `self`, with no caller in sight, is
    rewritten with its step as a closure (the default declines it, L2S702);
    the rewrite computes what the loop computes."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"m.py": CELL})
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("rewrite", "m.py", "--format", "json")
    assert loops_by_file(out)["m.py"] == [(9, "L2S702")]
    code, out, _ = invoke("rewrite", "m.py", "--format", "json", "--eager", "closure", "--write")
    assert loops_by_file(out)["m.py"] == [(9, "L2S000")]
    new = (tmp_path / "m.py").read_text()
    assert "        def _run_step(h, x):\n" in new
    ns_old, ns_new = {}, {}
    exec(textwrap.dedent(CELL), ns_old)
    exec(new, ns_new)
    import jax
    import numpy as np

    w = jax.random.normal(jax.random.PRNGKey(0), (4, 4)) / 2
    for n in (5, 1, 0):
        xs = jax.random.normal(jax.random.PRNGKey(n + 1), (n, 4))
        h = jax.random.normal(jax.random.PRNGKey(9), (4,))
        np.testing.assert_allclose(ns_old["Cell"](w).run(xs, h), ns_new["Cell"](w).run(xs, h), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ contexts
RNN = """
import jax.numpy as jnp

def rnn(w, xs, h):
    for x in xs:
        h = jnp.tanh(w @ h + x)
    return h
"""


def contexts(tmp_path: Path, files: dict[str, str], target: str = "pkg/model.py") -> tuple[str, str, dict]:
    write(tmp_path, {"pkg/__init__.py": "", **files})
    report = run([str(tmp_path / target)], Options(jobs=1))
    (loop,) = [lp for f in report.files for lp in f.loops]
    assert loop.status == "rewritten", loop.message
    data = loop.to_json()
    return data["context"]["kind"], data["context"]["reason"], data["step"]


def test_callers_under_jit_in_another_module_make_it_traced(tmp_path):
    kind, reason, step = contexts(tmp_path, {"pkg/model.py": RNN, "pkg/train.py": """
        import jax
        from .model import rnn

        @jax.jit
        def step(w, xs, h):
            return rnn(w, xs, h).sum()
        """})
    assert kind == "traced" and "train.py" in reason and "@jax.jit" in reason
    assert step == {"form": "closure", "passed": []}


def test_a_function_given_to_a_transformation_is_traced(tmp_path):
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": RNN, "pkg/train.py": """
        import jax
        from pkg import model as m

        grad_fn = jax.grad(lambda w, xs, h: m.rnn(w, xs, h).sum())
        """})
    assert kind == "traced" and "lambda given to `jax.grad`" in reason
    kind, reason, _ = contexts(tmp_path, {"pkg/train.py": """
        from functools import partial

        import jax
        from pkg import model as m

        fast = jax.jit(partial(m.rnn, 0.5))
        """})
    assert kind == "traced" and "`rnn` is given to `jax.jit` at" in reason and "train.py:6" in reason


def test_a_call_at_module_top_level_makes_it_eager(tmp_path):
    kind, reason, step = contexts(tmp_path, {"pkg/model.py": RNN, "pkg/train.py": """
        import jax
        import jax.numpy as jnp
        from .model import rnn

        @jax.jit
        def step(w, xs, h):
            return rnn(w, xs, h)

        TABLE = rnn(jnp.eye(3), jnp.ones((4, 3)), jnp.zeros(3))
        """})
    assert kind == "eager" and "module top level" in reason
    assert step == {"form": "module-level", "passed": ["w"]}


def test_constructors_and_their_callees_are_eager(tmp_path):
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": RNN + textwrap.dedent("""

        class Model:
            def __init__(self, w, xs, h):
                self.state = rnn(w, xs, h)
        """)})
    assert kind == "eager" and "`Model.__init__` is a constructor" in reason


def test_no_caller_or_a_public_library_name_is_unknown(tmp_path):
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": RNN})
    assert kind == "unknown" and "no caller of `rnn`" in reason
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": RNN, "pkg/train.py": """
        import jax
        from .model import rnn

        step = jax.jit(rnn)
        """})
    assert kind == "unknown" and "public name of a published library" in reason


def test_nested_steps_and_methods_called_through_self(tmp_path):
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": """
        import jax
        import jax.numpy as jnp

        class Model:
            def __init__(self, w):
                self.w = w

            def _cell(self, xs, h):
                for x in xs:
                    h = jnp.tanh(self.w @ h + x)
                return h

            @jax.jit
            def __call__(self, xs, h):
                return self._cell(xs, h)
        """})
    assert kind == "traced" and "`__call__`" in reason
    kind, reason, _ = contexts(tmp_path, {"pkg/model.py": """
        import jax
        import jax.numpy as jnp

        def outer(w, xs, h, n):
            def body(h, _):
                for x in xs:
                    h = jnp.tanh(w @ h + x)
                return h, None
            return jax.lax.scan(body, h, None, length=n)[0]
        """})
    assert kind == "traced" and "given to `jax.lax.scan`" in reason


def test_explain_shows_the_context_and_the_form_of_the_step(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"m.py": LOOP.replace("@jax.jit\n", "")})
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke("explain", "m.py")
    assert "context:   may run eagerly (no caller of `rnn` is seen" in out
    assert "step:      defined once at module level" in out and "`w` rides in the carry" in out
    write(tmp_path, {"m.py": LOOP})
    code, out, _ = invoke("explain", "m.py")
    assert "context:   under a JAX transformation (decorated with `@jax.jit`)" in out
    assert "step:      a closure defined in place of the loop" in out


# ------------------------------------------------------------------ a policy across modules
@pytest.mark.parametrize("options", [(), ("--min-trip-count", "0"), ("--eager", "closure")])
def test_layout_change_across_modules_under_any_policy(tmp_path, monkeypatch, options):
    """The builder's module and the loop's module are analysed under the run's
    policy alike: the loop over a parameter list built in another module is
    rewritten together with the builder, whatever the options."""
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"pk/__init__.py": "", "pk/params.py": """
        import jax


        def init_params(key, n, d):
            return [{"w": jax.random.normal(k, (d, d)) / d, "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (d,))}
                    for k in jax.random.split(key, n)]
        """, "pk/net.py": """
        import jax
        import jax.numpy as jnp

        from pk.params import init_params


        def apply(params, x):
            for p in params:
                x = jnp.tanh(x @ p["w"] + p["b"])
            return x


        def run(key, x):
            params = init_params(key, 3, x.shape[-1])
            return apply(params, x), len(params)
        """})
    monkeypatch.chdir(tmp_path)
    before = {name: (tmp_path / "pk" / name).read_text() for name in ("params.py", "net.py")}
    code, out, _ = invoke("rewrite", "pk", "--format", "json", "--write", *options)
    assert loops_by_file(out)["pk/net.py"] == [(8, "L2S000")]
    after = {name: (tmp_path / "pk" / name).read_text() for name in ("params.py", "net.py")}
    assert "jax.tree.map(" in after["params.py"] and "jax.lax.scan(" in after["net.py"]
    import jax
    import numpy as np

    def load(texts):
        params_ns: dict = {}
        exec(texts["params.py"], params_ns)
        net_ns: dict = {"init_params": params_ns["init_params"]}
        exec(texts["net.py"].replace("from pk.params import init_params\n", ""), net_ns)
        return net_ns["run"]

    x = jax.random.normal(jax.random.PRNGKey(5), (2, 4))
    want, got = load(before)(jax.random.PRNGKey(1), x), load(after)(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(want[0], got[0], rtol=1e-5, atol=1e-6)
    assert want[1] == got[1] == 3
