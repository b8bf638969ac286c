"""Labelled differential fuzzing of the JAX rewrite.

Programs come from the grammar in ``fuzz/grammar.py``; each is labelled
``must-rewrite`` or ``must-decline`` by construction and judged by
``fuzz/harness.py`` (crashes, unparseable output, a must-decline loop
rewritten, or any difference between original and rewrite in outputs or VJP
gradients, eagerly and under ``jax.jit``, is a failure).

The hypothesis runs are bounded and derandomized, so CI sees the same programs
every time; ``benchmarks/fuzz_long.py`` runs the same grammar over thousands of
seeds.  The regression tests at the end are shrunk counterexamples found by
these runs, written out by hand: each asserts the correct behaviour.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from fuzz.grammar import (CONSTRUCTS, ITERATIONS, MUST_DECLINE, MUST_REWRITE, RANGE_SLICES, STEPS, ArgSpec,
                          Program, generate, programs)
from fuzz.harness import Outcome, Tally, _zero_step, grown, run_program

# the bounded executed run: about 2 minutes on a 2-core machine (JAX compiles are the cost)
EXECUTED_EXAMPLES = 110
# the static run (rewrite and judge, nothing executed) is cheap
STATIC_EXAMPLES = 400
MIN_SHARE = 0.90

BOUNDED = dict(deadline=None, derandomize=True, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               phases=(Phase.explicit, Phase.generate, Phase.shrink))


def _failure_report(program: Program, outcome) -> str:
    return "\n".join(outcome.failures) + "\n\n" + program.describe()


def test_fuzz_executed_bounded_run(capsys):
    """Original vs rewrite on random inputs: no failure, and at least 90% of the
    must-rewrite programs that run rewritten completely.

    Every program of the bounded run is judged and all failures are listed
    (smallest program first), so the run's time stays bounded; set
    ``FUZZ_SHRINK=1`` to stop at the first failure and let hypothesis shrink it."""
    shrink = bool(os.environ.get("FUZZ_SHRINK"))
    logging.disable(logging.CRITICAL)
    tally = Tally()
    failed: list[tuple[Program, object]] = []
    try:
        @settings(max_examples=EXECUTED_EXAMPLES, **BOUNDED)
        @given(programs())
        def check(program):
            outcome = run_program(program)
            tally.add(program, outcome)
            if outcome.failed:
                failed.append((program, outcome))
            if shrink:
                assert not outcome.failed, _failure_report(program, outcome)

        check()
    finally:
        logging.disable(logging.NOTSET)
        with capsys.disabled():
            print(f"\nfuzz (bounded, executed): {json.dumps(tally.summary())}")
    failed.sort(key=lambda pair: len(pair[0].source))
    assert not failed, f"{len(failed)} failing programs; the smallest:\n\n" + "\n\n".join(
        _failure_report(p, o) for p, o in failed[:3])
    # the run exercised both labels and the numerical comparison
    assert tally.must_decline >= 20 and tally.must_rewrite_run >= 40, tally.summary()
    declined = "\n\n".join(f"{code}: {msg}\n{src}" for code, (msg, src) in sorted(tally.declined_examples.items()))
    assert tally.share >= MIN_SHARE, (
        f"must-rewrite share {tally.share:.3f} < {MIN_SHARE}: declined by code {tally.declined_must_rewrite}\n"
        f"one example per code:\n{declined}")


@settings(max_examples=STATIC_EXAMPLES, **BOUNDED)
@given(programs())
def test_fuzz_static(program):
    """Every program, rewritten only: no crash, the output parses, every loop is
    reported, and no must-decline loop is rewritten."""
    outcome = run_program(program, execute=False)
    assert not outcome.failed, _failure_report(program, outcome)


@settings(max_examples=STATIC_EXAMPLES // 2, **BOUNDED)
@given(programs(label=MUST_DECLINE))
def test_fuzz_static_must_decline(program):
    outcome = run_program(program, execute=False)
    assert not outcome.failed, _failure_report(program, outcome)
    assert program.must_not_rewrite and len(outcome.forbidden) == len(program.must_not_rewrite)
    assert all(status in ("declined", "not-candidate") for status, _ in outcome.forbidden), outcome.forbidden


def test_grammar_coverage():
    """The grammar produces every construct it promises (over a fixed set of seeds)."""
    seen: dict[str, int] = {}
    labels = {MUST_REWRITE: 0, MUST_DECLINE: 0}
    for seed in range(3000):
        p = generate(seed)
        labels[p.label] += 1
        for f in p.features:
            seen[f] = seen.get(f, 0) + 1
    wanted = (
        [f"iter:{it}" for it in ITERATIONS] + [f"T={t}" for t in STEPS] + [f"range:{r}" for r in RANGE_SLICES]
        + ["carries:1", "carries:2", "carries:3", "tuple-unpack", "tuple-unpack:cell", "scalar-carry:weak",
           "scalar-carry:array", "xs:list", "xp-local", "local", "last-value", "last-value:bound-before",
           "nested:count", "nested:rows", "term:matmul", "term:where", "term:sin", "term:index", "term:u",
           "term:scaled", "term:product", "term:bias", "term:shift", "term:total",
           "ys:jnp.stack", "ys:jnp.stack(axis)", "ys:jnp.array", "ys:jnp.concatenate", "ys:jnp.concatenate(axis)",
           "ys:tuple", "ys:at[t]", "ys:at[:, t]", "ys:at[..., t]", "ys:flipped", "ys-use:len", "ys-use:last",
           "ys-use:first", "y:carry", "y:scaled", "y:sum", "y:input"]
        + [f"construct:{c}:outer" for c in CONSTRUCTS]
        + [f"construct:{c}:inner" for c in CONSTRUCTS if c != "if_element"]
    )
    missing = [w for w in wanted if w not in seen]
    assert not missing, f"never generated: {missing}"
    assert 0.2 < labels[MUST_DECLINE] / 3000 < 0.4, labels


def test_generate_is_deterministic():
    assert generate(123) == generate(123)
    assert generate(123) != generate(124)


# ----------------------------------------------------------------------------- regressions

def _program(body: str, args: list[tuple], label: str = MUST_REWRITE, must_not: tuple[int, ...] = ()) -> Program:
    """A hand-written program in the grammar's form: ``body`` is the function
    ``f``; ``args`` are (name, shape) or (name, shape, "list")."""
    source = "import jax\nimport jax.numpy as jnp\nimport numpy as np\n\n\n" + textwrap.dedent(body).lstrip("\n")
    lines = source.splitlines()
    loops = tuple(i + 1 for i, line in enumerate(lines) if line.lstrip().startswith("for "))
    specs = tuple(ArgSpec(a[0], a[1], kind=a[2] if len(a) > 2 else "array") for a in args)
    return Program(source=source, args=specs, label=label, loops=loops,
                   must_not_rewrite=tuple(loops[i] for i in must_not))


def _assert_ok(program: Program) -> None:
    outcome = run_program(program)
    assert not outcome.failed, _failure_report(program, outcome)
    assert outcome.discarded is None, outcome.discarded
    assert outcome.rewritten_all, outcome.statuses


# The last value of an iteration-local name after a reversed loop is the value of
# the last step *processed*, index 0; with `reverse=True` the scan's stacked
# per-step values are in index order, so it is `all_z[0]`, not `all_z[-1]`.
REVERSED_LAST_VALUE = {
    "reversed-elements": _program("""
        def f(xs, h):
            for x in reversed(xs):
                z = jnp.tanh(x + h)
                h = h * 0.5 + z
            return h, z
        """, [("xs", (5, 3)), ("h", (3,))]),
    "reversed-range": _program("""
        def f(xs, h):
            for t in reversed(range(xs.shape[0])):
                z = jnp.tanh(xs[t] + h)
                h = h * 0.5 + z
            return h, z
        """, [("xs", (5, 3)), ("h", (3,))]),
    "descending-range": _program("""
        def f(xs, h):
            for t in range(xs.shape[0] - 1, -1, -1):
                z = jnp.tanh(xs[t] + h)
                h = h * 0.5 + z
            return h, z
        """, [("xs", (5, 3)), ("h", (3,))]),
}


@pytest.mark.parametrize("name", sorted(REVERSED_LAST_VALUE))
def test_regression_last_value_after_reversed_loop(name):
    _assert_ok(REVERSED_LAST_VALUE[name])


# `range(a, b)` with b < a runs no step; the rewrite's `length=b - a` is then
# negative, and the scan fails (MLIRError "invalid tensor dimension size").
NEGATIVE_LENGTH = {
    "start-past-stop": _program("""
        def f(xs, h):
            for t in range(1, xs.shape[0]):
                h = jnp.sin(h + 1.0)
            return h
        """, [("xs", (0, 3)), ("h", (3,))]),
    "stop-below-zero": _program("""
        def f(xs, h):
            for t in range(xs.shape[0] - 2):
                h = jnp.sin(h + 1.0)
            return h
        """, [("xs", (1, 3)), ("h", (3,))]),
    "guarded-slice": _program("""
        def f(xs, h):
            for t in range(xs.shape[0] - 3):
                h = jnp.sin(h + xs[t])
            return h
        """, [("xs", (2, 3)), ("h", (3,))]),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE_LENGTH))
def test_regression_empty_range_with_negative_length(name):
    _assert_ok(NEGATIVE_LENGTH[name])


# Zero-step loops whose step reads the time axis: the step is traced once even
# when it never runs, and indexing an axis of length 0 with a traced index raises
# IndexError while tracing.  Reads of `x[t]` and writes of `out.at[i]` are now
# slices and stacked outputs, so nothing indexes the empty axis.
ZERO_STEP_INDEXING = {
    "ellipsis-read": _program("""
        def f(xs, h):
            for t in range(xs.shape[-1]):
                h = jnp.tanh(h + xs[..., t])
            return h
        """, [("xs", (3, 4, 0)), ("h", (3, 4))]),
    "at-set-enumerate": _program("""
        def f(xs):
            out = jnp.zeros(xs.shape)
            for i, x in enumerate(xs):
                out = out.at[i].set(x * 2.0)
            return out
        """, [("xs", (0, 4))]),
}


@pytest.mark.parametrize("name", sorted(ZERO_STEP_INDEXING))
def test_regression_zero_steps_with_scanned_index(name):
    _assert_ok(ZERO_STEP_INDEXING[name])
    assert not run_program(ZERO_STEP_INDEXING[name]).zero_step


# The documented zero-step limitation (README, "Limitations"): with zero steps
# the rewrite raises while tracing (a wrapping read `x[t - 1]` keeps the traced
# index; the element of an empty Python list is a scalar), or `jnp.array` of the
# empty list is float32[0] where the stacked outputs are float32[0, 3].  The
# harness accepts exactly these, and only when the same program with steps is
# equivalent; these tests pin both halves.
ZERO_STEP_LIMITATION = {
    "wrapping-read": _program("""
        def f(x):
            acc = jnp.zeros(x.shape[1:])
            for t in range(x.shape[0]):
                acc = acc + x[t - 1] * 2.0 + x[t]
            return acc
        """, [("x", (0, 4))]),
    "array-of-empty-outputs": _program("""
        def f(xs, h):
            outs = []
            for x in xs:
                h = jnp.tanh(h + x)
                outs.append(h)
            return jnp.array(outs)
        """, [("xs", (0, 3)), ("h", (3,))]),
    "empty-python-list": _program("""
        def f(xs, w, h):
            for x in xs:
                h = jnp.tanh(x @ w + h)
            return h
        """, [("xs", (0, 4), "list"), ("w", (4, 3)), ("h", (3,))]),
}


@pytest.mark.parametrize("name", sorted(ZERO_STEP_LIMITATION))
def test_regression_zero_step_limitation(name):
    program = ZERO_STEP_LIMITATION[name]
    outcome = run_program(program)
    assert not outcome.failed, _failure_report(program, outcome)
    assert outcome.rewritten_all and outcome.zero_step, outcome
    _assert_ok(grown(program))


def test_zero_step_classification_is_narrow():
    """A difference on inputs with steps is never the zero-step limitation: a
    mismatch elsewhere in the same program stays a failure."""
    program = _program("""
        def f(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, [("xs", (0, 3)), ("h", (3,))])
    outcome = run_program(program)
    assert not outcome.failed and not outcome.zero_step
    out = Outcome(program.label, failures=["[mismatch] eager output leaf 0: values differ"], failure_kind="mismatch")
    _zero_step(program, out, 0, True, True)
    assert out.failed and not out.zero_step


# Must-rewrite shapes that are declined (they lower the must-rewrite share).
FALSE_DECLINES = {
    # iterating a per-step value written inline: its length is a static shape, as it
    # is when the same value is first bound to a name (`xp = x @ w; for r in xp:` is rewritten)
    "inner-loop-over-inline-expression": _program("""
        def f(xs, w, h):
            for x in xs:
                s = jnp.zeros(w.shape[1])
                for r in x @ w:
                    s = s * 0.5 + jnp.sin(r)
                h = jnp.tanh(h + s)
            return h
        """, [("xs", (5, 3, 4)), ("w", (4, 6)), ("h", (6,))]),
    # a preallocated output written along the last axis (`.at[t]` and `.at[:, t]` are rewritten)
    "at-set-ellipsis": _program("""
        def f(xs):
            out = jnp.zeros(xs.shape)
            h = jnp.zeros(xs.shape[:-1])
            for t in range(xs.shape[-1]):
                h = jnp.tanh(h + xs[..., t])
                out = out.at[..., t].set(h * 2.0)
            return out, h
        """, [("xs", (3, 4, 5))]),
}


@pytest.mark.parametrize("name", sorted(FALSE_DECLINES))
def test_regression_must_rewrite_shapes_declined(name):
    _assert_ok(FALSE_DECLINES[name])
