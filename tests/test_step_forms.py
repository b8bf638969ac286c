"""The two forms of the step function, executed, and the emitted style details.

* the closure form (``ScanPlan.hoisted is None``): the step is defined in place
  of the loop;
* the module-level form (``hoisted`` a list of names): the step is defined once
  before the top-level statement holding the loop, the names ride in the carry
  unchanged.  Called eagerly three times, the rewritten function compiles the
  scan on the first call only (the closure form compiles it on every call).

The analysis decides the form (``checks/pays.py``); these tests also force each
form on the same loops (``rewrite_forcing``) and run both against the original,
eagerly, under ``jax.jit`` and through ``jax.vjp``.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import pytest

from helpers import _compare, assert_tree_close, load
from loop2scan import rewrite_source
from loop2scan.analysis.loop import analyze_module
from loop2scan.engine import _emit, _module_context
from loop2scan.policy import Style
from loop2scan.report import explain_loop

HEADER = "import jax\nimport jax.numpy as jnp\n\n\n"


def src(body: str) -> str:
    return HEADER + textwrap.dedent(body).lstrip("\n")


def rewrite_forcing(text: str, hoist: bool, style: Style = Style()) -> str:
    """Rewrite ``text`` with every plan's step in one form: at module level
    (passing the function's values the step reads) or as a closure."""
    mctx = _module_context(text, "jax", "stacked", None, None)
    fw = mctx.framework
    loops = analyze_module(mctx)
    for r in loops:
        if r.plan is None:
            continue
        plan = r.plan
        if hoist and plan.nested_in is None:
            plan.hoisted = [n for n in plan.broadcast if n in plan.local_names]
        elif not hoist:
            plan.hoisted = None
    result = _emit(text, mctx, loops, fw, style=style)
    assert all(r.status != "declined" or r.code != "L2S901" for r in result.loops), \
        [r.message for r in result.loops]
    assert result.new_text is not None, [(r.line, r.status, r.code) for r in result.loops]
    return result.new_text


def compare(original: str, rewritten: str, fn: str, cases, static_argnums=()) -> None:
    a = getattr(load(original), fn)
    b = getattr(load(rewritten), fn)
    _compare(a, b, [tuple(c) for c in cases], jax.random.PRNGKey(0), grad=True, jit=True, static_argnums=static_argnums,
             rtol=1e-5, atol=1e-6)


def rand(*shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


T, B, D = 5, 3, 4

RNN = src("""
    def rnn(params, xs, mask, h):
        # the recurrence
        states = []
        for t in range(xs.shape[0]):
            input_t = xs[t]
            h = mask * jnp.tanh(input_t @ params["w"] + h @ params["u"]) + (1 - mask) * h
            states.append(h)
        states = jnp.stack(states)
        return states, h
""")


def rnn_cases():
    params = {"w": rand(D, D, seed=1) / 2, "u": rand(D, D, seed=2) / 2}
    mask = (jax.random.uniform(jax.random.PRNGKey(3), (B, 1)) > 0.3).astype(jnp.float32)
    xs = rand(T, B, D, seed=4)
    h = rand(B, D, seed=5)
    # (no zero-step case: the loop's `jnp.stack` of no states raises)
    return [(params, xs, mask, h), (params, xs[:1], mask, h)]


@pytest.mark.parametrize("hoist", [True, False])
def test_both_forms_compute_what_the_loop_computes(hoist):
    new = rewrite_forcing(RNN, hoist)
    if hoist:
        assert "def _rnn_step(carry, input_t):\n    h, mask, params = carry\n" in new
        assert "(h, _, _), states = jax.lax.scan(_rnn_step, (h, mask, params), xs)" in new
        assert new.index("def _rnn_step") < new.index("def rnn(")
    else:
        assert "    def _rnn_step(h, input_t):\n" in new
        assert "h, states = jax.lax.scan(_rnn_step, h, xs)" in new
    assert "input_t = xs" not in new and "states = states" not in new
    compare(RNN, new, "rnn", rnn_cases())


def _compilations(fn, args, calls=3) -> list[int]:
    """How many backend compilations each of ``calls`` eager calls makes."""
    events: list[str] = []

    def listen(name, *_, **__):
        events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        counts = []
        for _ in range(calls):
            events.clear()
            jax.block_until_ready(fn(*args))
            counts.append(sum(1 for e in events if e == "/jax/core/compile/backend_compile_duration"))
        return counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_an_eager_call_of_the_module_level_step_compiles_once():
    args = rnn_cases()[0]
    hoisted = load(rewrite_forcing(RNN, hoist=True)).rnn
    counts = _compilations(hoisted, args)
    assert counts[0] >= 1 and counts[1:] == [0, 0], counts
    # the closure form, for contrast: a new step function on every call, compiled again
    closure = load(rewrite_forcing(RNN, hoist=False)).rnn
    again = _compilations(closure, args)
    assert again[1] >= 1 and again[2] >= 1, again


def test_the_analysis_defines_steps_of_eager_functions_at_module_level():
    r = rewrite_source(RNN, "jax")
    (loop,) = r.loops
    assert loop.plan.hoisted == ["mask", "params"]
    assert r.new_text == rewrite_forcing(RNN, hoist=True)


NESTED = src("""
    def _smooth_step(x):
        return x  # a module function with the name a step would take


    # smooth each row, then accumulate: the comments and the decorator stay with the function
    @staticmethod
    def smooth(grid, alpha, beta):
        total = jnp.zeros(grid.shape[2:])
        for row in grid:
            level = jnp.zeros(row.shape[1:])
            for value in row:
                text = '''several
    lines'''
                level = alpha * level + (1 - alpha) * value * (len(text) > 0)
            total = beta * total + level  # accumulate
        return total
""").replace("@staticmethod\n", "")


@pytest.mark.parametrize("hoist", [True, False])
def test_nested_loops_in_both_forms(hoist):
    new = rewrite_forcing(NESTED, hoist)
    assert "'\'\'several\nlines'\'\'" in new  # the string's text is unchanged wherever its code moved
    assert "total = beta * total + level  # accumulate" in new
    assert "\ndef _smooth_step(x):\n    return x  # a module function" in new
    assert "# smooth each row, then accumulate: the comments and the decorator stay with the function\n" \
           "def smooth(" in new
    assert "def _smooth_level_step(level, value):" in new  # named after what it carries
    if hoist:
        assert "\n\ndef _smooth_total_step(carry, row):\n    total, alpha, beta = carry\n" in new
        assert "(total, _, _), _ = jax.lax.scan(_smooth_total_step, (total, alpha, beta), grid)" in new
    else:
        assert "\n    def _smooth_total_step(total, row):\n" in new
    grid = rand(4, 3, 2, seed=7)
    compare(NESTED, new, "smooth", [(grid, 0.7, 0.9), (grid[:1], 0.7, 0.9), (grid[:, :1], 0.7, 0.9),
                                    (grid[:0], 0.7, 0.9)])


def test_steps_of_two_classes_get_distinct_module_names():
    code = src("""
        class Encoder:
            def encode(self, xs, w, h):
                for x in xs:
                    h = jnp.tanh(x @ w + h)
                return h


        class Decoder:
            def encode(self, xs, w, h):
                for x in xs:
                    h = jnp.sin(x @ w + h)
                return h
    """)
    new = rewrite_forcing(code, hoist=True)
    names = [line.split("(")[0][4:] for line in new.splitlines() if line.startswith("def _")]
    assert len(names) == 2 and len(set(names)) == 2, names
    mod = load(new)
    xs, w, h = rand(T, B, D), rand(D, D, seed=2) / 3, rand(B, D, seed=3)
    orig = load(code)
    assert_tree_close(orig.Encoder().encode(xs, w, h), mod.Encoder().encode(xs, w, h))
    assert_tree_close(orig.Decoder().encode(xs, w, h), mod.Decoder().encode(xs, w, h))


def test_gettext_underscore_is_not_rebound():
    code = src("""
        from gettext import gettext as _


        @jax.jit
        def run(xs, h):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h + xs[t])
            return h, _("done") == "done"
    """)
    new = rewrite_source(code, "jax").new_text
    assert "h, _unused = jax.lax.scan(" in new
    assert ")[0]" not in new and ")[1]" not in new
    compare(code, new, "run", [(rand(T, B, D), rand(B, D, seed=1))])


def test_underscore_from_a_for_loop_is_free():
    code = src("""
        @jax.jit
        def run(a, v):
            for _ in range(12):
                v = jnp.tanh(a @ v)
            return v
    """)
    new = rewrite_source(code, "jax").new_text
    assert "v, _ = jax.lax.scan(_run_step, v, length=12)" in new
    compare(code, new, "run", [(rand(D, D), rand(D, seed=1))])


def test_trip_counts_are_plain_where_they_cannot_be_negative():
    code = src("""
        import functools


        @functools.partial(jax.jit, static_argnums=2)
        def run(a, v, n):
            for _ in range(n):
                v = jnp.tanh(a @ v)
            for _ in range(a.shape[0]):
                v = jnp.sin(a @ v)
            for _ in range(2, a.shape[0] + 2):
                v = jnp.cos(a @ v)
            return v
    """)
    new = rewrite_source(code, "jax").new_text
    assert "length=max(n, 0)" in new and "length=a.shape[0])" in new and "len(range(" not in new
    compare(code, new, "run", [(rand(D, D) / 3, rand(D, seed=1), k) for k in (5, 1, 0, -2)], static_argnums=(2,))


def test_last_values_carried_or_stacked_with_a_reason():
    code = src("""
        @jax.jit
        def run(h, w):
            out = h
            for _ in range(10):
                h = jnp.tanh(h @ w)
                out = h
                y = h @ w
            return out, y
    """)
    r = rewrite_source(code, "jax")
    assert "all_out" not in r.new_text and "all_y" in r.new_text
    (loop,) = r.loops
    assert loop.plan.carries == ["h", "out"]
    text = explain_loop("f.py", loop)
    assert "note:" in text and "`y` is stacked and its last row taken" in text
    compare(code, r.new_text, "run", [(rand(B, D), rand(D, D, seed=1) / 2)])


def test_arrays_are_not_wrapped_in_asarray():
    code = src("""
        def td_errors(rewards, values, next_values, gamma):
            return rewards + gamma * next_values - values


        @jax.jit
        def returns(rewards, values, last, h):
            next_values = jnp.concatenate([values[1:], last[None]], axis=0)
            deltas = td_errors(rewards, values, next_values, 0.9)
            outs = []
            for t in range(deltas.shape[0]):
                h = 0.5 * h + jnp.tanh(deltas[t])
                outs.append(h)
            return jnp.stack(outs)
    """)
    new = rewrite_source(code, "jax").new_text
    assert "asarray" not in new
    rewards = rand(T, B, seed=1)
    compare(code, new, "returns", [(rewards, rand(T, B, seed=2), rand(B, seed=3), rand(B, seed=4))])


@pytest.mark.parametrize("width", [60, 88, 120])
def test_emitted_lines_fit_the_configured_length(width):
    code = src("""
        @jax.jit
        def encoder_with_a_descriptive_name(input_sequence, recurrent_weights, initial_state):
            hidden_state = initial_state
            collected_states = []
            for time_index in range(input_sequence.shape[0]):
                hidden_state = jnp.tanh(input_sequence[time_index] + hidden_state @ recurrent_weights)
                collected_states.append(hidden_state)
            return jnp.stack(collected_states), hidden_state
    """)
    new = rewrite_forcing(code, hoist=False, style=Style(line_length=width))
    original = {line.strip() for line in code.splitlines()}
    for line in new.splitlines():
        if line.strip() not in original and "jnp.tanh(input_sequence" not in line:
            assert len(line) <= width, line
    from test_emitted_style import formatter_disagreements

    assert formatter_disagreements(code, new, width) == []
    xs = rand(T, B, D)
    compare(code, new, "encoder_with_a_descriptive_name", [(xs, rand(D, D, seed=1) / 2, rand(B, D, seed=2))])


def test_imports_go_after_the_last_jax_import():
    code = textwrap.dedent("""\
        import math

        import jax
        from jax import lax
        import numpy as np


        def f(xs, h):
            for x in xs:
                h = lax.tanh(x + h) * math.pi
            return h
    """)
    new = rewrite_source(code, "jax").new_text
    assert "from jax import lax\nimport jax.numpy as jnp\nimport numpy as np\n" in new
    assert "lax.scan(" in new
    # no jax import in the leading block: after the block
    code2 = "import math\n\n\ndef f(xs, h):\n    for x in xs:\n        h = h + x @ x\n    return h * math.pi\n"
    new2 = rewrite_source(code2, "jax").new_text
    assert new2.startswith("import math\nimport jax\nimport jax.numpy as jnp\n")


@pytest.mark.parametrize("imports, ok", [
    ("from jax._src import lax\nfrom jax._src import numpy as jnp\n", True),
    ("from jax._src.lax import control_flow\nfrom jax._src.numpy import lax_numpy as jnp\n", True),
    ("from jax._src.numpy import lax_numpy as jnp\n", False),
])
def test_inside_jax_no_import_is_added(tmp_path, imports, ok):
    pkg = tmp_path / "jax" / "_src"
    pkg.mkdir(parents=True)
    (tmp_path / "jax" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    code = imports + "\n\ndef f(xs, h):\n    for x in xs:\n        h = jnp.tanh(x + h)\n    return h\n"
    path = pkg / "mod.py"
    path.write_text(code)
    r = rewrite_source(code, "jax", path=str(path))
    if ok:
        assert r.new_text is not None and "import jax" not in r.new_text.replace("from jax", "")
        assert "scan(" in r.new_text
    else:
        assert r.new_text is None
        (loop,) = r.loops
        assert loop.status == "declined" and "inside jax's own source tree" in loop.message
