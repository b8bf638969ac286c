"""Every loop2scan rule, run from the examples written beside it.

Each module of :mod:`loop2scan.analysis.checks` lists, next to its codes and
its checks, ``INVALID`` examples (loops that must be declined with exactly that
code, or reported as not a candidate / skipped), ``VALID`` near misses (loops
that must be rewritten, then run, original against rewrite, on random inputs)
and ``NOT_THIS`` cases (loops that may be declined, but never for that code).
The format is documented in :mod:`loop2scan.analysis.examples`: a trailing
``# <-`` marks the line a decline must point at (``LoopResult.where``); a case
with no marker is about the loop itself, so ``where`` is either absent or on
the ``for`` line.  ``says`` lists text the message must contain: the offending
construct or name, and what to do.
"""

from __future__ import annotations

import importlib
import pkgutil
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import loop2scan.analysis.checks as checks
from helpers import check_equivalent, rewrite, statuses
from loop2scan import rewrite_source
from loop2scan.api import options_from_config, run
from loop2scan.config import load_config
from loop2scan.analysis.examples import ArraySpec, Invalid, KeySpec, NotThis, Valid, marked_lines, parse_args
from loop2scan.codes import CODES, REWRITTEN

RULE_MODULES = [importlib.import_module(f"{checks.__name__}.{m.name}") for m in pkgutil.iter_modules(checks.__path__)]

# Limitations of the emitter rather than rules of the analysis.
EMITTER_INVALID = [
    Invalid("L2S901", "module-rebinds-jax", """
        import importlib

        import jax.numpy as jnp

        jax = importlib.import_module("jax")

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("`jax`", "left unchanged"), header=False),
]

INVALID: list[Invalid] = [c for m in RULE_MODULES for c in getattr(m, "INVALID", ())] + EMITTER_INVALID
VALID: list[Valid] = [c for m in RULE_MODULES for c in getattr(m, "VALID", ())]
NOT_THIS: list[NotThis] = [c for m in RULE_MODULES for c in getattr(m, "NOT_THIS", ())]


def build_args(cases: tuple[str, ...]) -> list[tuple]:
    """Arguments for each case string of an example (distinct seeds per position)."""
    out = []
    for case in cases:
        args = []
        for i, item in enumerate(parse_args(case)):
            key = jax.random.PRNGKey(i)
            if isinstance(item, KeySpec):
                args.append(key)
            elif isinstance(item, ArraySpec):
                dtype = np.dtype(item.dtype) if item.dtype != "bfloat16" else jax.numpy.bfloat16
                if np.issubdtype(dtype, np.integer):
                    args.append(jax.random.randint(key, item.shape, 0, 5, dtype))
                elif item.dtype == "bool":
                    args.append(jax.random.bernoulli(key, 0.5, item.shape))
                else:
                    args.append(jax.random.normal(key, item.shape, dtype))
            else:
                args.append(item)
        out.append(tuple(args))
    return out


def _first_loop(result):
    assert result.error is None, result.error
    assert result.loops, "no loop was found"
    return min(result.loops, key=lambda loop: (loop.line, loop.col))


# ----------------------------------------------------------------------------- tests

def test_every_code_has_a_case():
    """The examples cover every code of ``loop2scan.codes`` but ``L2S000``."""
    covered = {c.code for c in INVALID}
    missing = sorted(set(CODES) - {REWRITTEN} - covered)
    assert not missing, f"codes without an INVALID case: {missing}"
    unknown = sorted({c.code for c in INVALID} - set(CODES))
    assert not unknown, unknown
    near = {c.near for c in VALID} | {c.code for c in NOT_THIS}
    assert near <= set(CODES)


def test_examples_stand_beside_their_codes():
    """An example lives in the module that defines its code."""
    for module in RULE_MODULES:
        own = {c.code for c in getattr(module, "CODES", ())}
        for case in getattr(module, "INVALID", ()):
            assert case.code in own, f"{module.__name__}: {case.id} belongs beside {case.code}"
        for case in getattr(module, "VALID", ()):
            assert case.near in own, f"{module.__name__}: {case.id} belongs beside {case.near}"


def test_case_ids_are_unique():
    ids = [c.id for c in INVALID] + [c.id for c in VALID] + [c.id for c in NOT_THIS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def _rewrite_in_project(case: Invalid, tmp: Path):
    """Write the case's project, run over it, and return the report of ``case.path``."""
    for rel, source in ((case.path, case.text), *case.project):
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n") if rel != case.path else source, encoding="utf-8")
    paths = [str(tmp / p) for p in case.run] or [str(tmp)]
    # the project's pyproject.toml applies, as in a real run (its dependencies name the target versions)
    report = run(paths, options_from_config(load_config(paths), paths, framework=case.framework, jobs=1))
    found = [f for f in report.files if Path(f.path).resolve() == (tmp / case.path).resolve()]
    assert found, [f.path for f in report.files]
    return found[0]


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid(case: Invalid, tmp_path):
    text = case.text
    result = _rewrite_in_project(case, tmp_path) if case.project else rewrite_source(text, case.framework,
                                                                                      case.layout)
    if case.project:
        assert all(f.new_text is None for f in [result]), result.new_text
    loop = _first_loop(result)
    assert (loop.status, loop.code) == (case.status, case.code), \
        f"{statuses(result)}: {loop.message}"
    # nothing is rewritten when this was the only loop
    if len(result.loops) == 1 and not case.project:
        assert result.new_text is None, result.new_text
    for part in case.says:
        assert part in loop.message, f"message {loop.message!r} does not mention {part!r}"
    # the construct at fault
    marked = marked_lines(text)
    if marked:
        assert loop.where is not None, f"no `where` for {loop.message!r}"
        assert loop.where.line in marked, \
            f"`where` is line {loop.where.line} ({loop.where.kind}), expected one of {sorted(marked)}"
    else:
        assert loop.where is None or loop.where.line == loop.line, loop.where
    # the message, or the code's documented fix shown with it, says what to do
    fix = CODES[loop.code].fix
    assert fix and len(loop.message) > 15
    if case.hint:
        assert case.hint in loop.message + " " + fix, (loop.message, fix)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid(case: Valid):
    text = case.text
    result = rewrite(text)
    assert [(l.status, l.code) for l in result.loops] == [("rewritten", REWRITTEN)] * len(result.loops), \
        [(l.line, l.code, l.message) for l in result.loops]
    check_equivalent(text, case.fn, build_args(case.args), rewritten=len(result.loops),
                     static_argnums=case.static_argnums, grad=case.grad, modes=case.modes)


@pytest.mark.parametrize("case", NOT_THIS, ids=lambda c: c.id)
def test_not_declined_for(case: NotThis):
    text = case.text
    result = rewrite(text)
    outer = _first_loop(result)
    assert outer.code != case.code, f"{statuses(result)}: {outer.message}"
    if case.fn is not None:
        assert outer.status == "rewritten", f"{statuses(result)}: {outer.message}"
        check_equivalent(text, case.fn, build_args(case.args), static_argnums=case.static_argnums)
