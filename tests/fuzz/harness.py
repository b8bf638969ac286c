"""Run one labelled program through loop2scan and judge the result.

:func:`run_program` rewrites the program's source and returns an
:class:`Outcome`:

* a **failure** is any exception raised by loop2scan, an internal-error code
  (``L2S901``: an emitter exception or a rewrite that did not parse), a
  rewritten text that does not parse, a report that does not account for
  every loop, a rewrite of a loop that a must-decline construct forbids, or
  any difference between the original and the rewritten function (outputs or
  VJP gradients, eagerly or under ``jax.jit``, including the rewritten code
  raising where the original runs);
* a must-rewrite program some loop of which was declined is **not** a
  failure: its codes and messages are recorded (the rewritten share is a
  metric);
* a program whose original function raises on its inputs (``jnp.stack([])``
  after zero steps, a last value read after zero steps) is **discarded**: it
  is still rewritten and the rewrite still judged statically (crashes,
  parsing, must-decline loops), but nothing is run.

Outputs are compared leaf by leaf after ``jnp.asarray`` (a Python ``0.0``
left by a zero-step loop is the float32 scalar JAX would make of it), with
``helpers.assert_tree_close``.  Gradients: a VJP with a random cotangent with
respect to every floating-point argument, eagerly and inside one
``jax.jit``-compiled function.  A mode in which the *original* raises (a
NumPy buffer written under ``jax.jit``, say) is not compared, and is counted.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from fuzz.grammar import MUST_DECLINE, MUST_REWRITE, Program
from helpers import assert_tree_close, load
from loop2scan import rewrite_source

RTOL, ATOL = 1e-5, 1e-5  # outputs
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-4  # gradients

INTERNAL = "L2S901"


@dataclass
class Outcome:
    label: str
    statuses: list[tuple[int, str, str]] = field(default_factory=list)  # (line, status, code) per loop
    messages: dict[int, str] = field(default_factory=dict)  # line -> message, for loops not rewritten
    rewritten_all: bool = False  # every loop of the program was rewritten
    rewritten_any: bool = False
    discarded: Optional[str] = None  # why the original could not run
    failures: list[str] = field(default_factory=list)
    failure_kind: Optional[str] = None  # crash / unparseable / bad-report / wrong-rewrite / mismatch
    forbidden: list[tuple[str, str]] = field(default_factory=list)  # (status, code) of each must-not-rewrite loop
    skipped_modes: list[str] = field(default_factory=list)  # modes in which the original raised
    # differences that are the documented zero-step limitation (README, "Limitations"): see `_zero_step`
    zero_step: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def fail(self, kind: str, message: str) -> None:
        if self.failure_kind is None:
            self.failure_kind = kind
        self.failures.append(f"[{kind}] {message}")

    @property
    def declined_codes(self) -> list[str]:
        """Codes of the loops that were not rewritten."""
        return [code for _, status, code in self.statuses if status != "rewritten"]


def make_args(program: Program, seed: int = 0) -> tuple:
    """Random arguments for ``program.fn``: JAX arrays, or Python lists of them."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    out = []
    for spec in program.args:
        value = (rng.standard_normal(spec.shape) * spec.scale).astype(spec.dtype)
        out.append([jnp.asarray(v) for v in value] if spec.kind == "list" else jnp.asarray(value))
    return tuple(out)


def _normal(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, tree)


def _floats(tree):
    """Float leaves kept, others replaced by a float32 zero (for a VJP)."""
    import jax
    import jax.numpy as jnp

    def leaf(x):
        x = jnp.asarray(x)
        return x if jnp.issubdtype(x.dtype, jnp.floating) else jnp.zeros((), jnp.float32)

    return jax.tree.map(leaf, tree)


def _quiet(fn, *args):
    """Call ``fn`` with stdout swallowed (programs may print), logging untouched."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run_program(program: Program, seed: int = 0, jit: bool = True, grad: bool = True,
                execute: bool = True) -> Outcome:
    """Rewrite ``program`` and judge the result (``execute=False``: statically only)."""
    start = time.perf_counter()
    out = Outcome(program.label)
    try:
        _judge(program, out, seed, jit, grad, execute)
        if out.failure_kind == "mismatch":
            _zero_step(program, out, seed, jit, grad)
    finally:
        out.seconds = time.perf_counter() - start
    return out


_EMPTY_SHAPES = re.compile(r"output leaf \d+: shape \(0,\) vs \(0(, \d+)+\)$")


def grown(program: Program, size: int = 7) -> Program:
    """The same program with every axis of length 0, 1 or 2 (the short trip
    counts; the grammar's other sizes are larger) given ``size`` steps."""
    args = tuple(dataclasses.replace(a, shape=tuple(size if n <= 2 else n for n in a.shape)) for a in program.args)
    return dataclasses.replace(program, args=args)


def loops_without_steps(program: Program, seed: int = 0) -> set[int]:
    """Lines of the program's loops whose body the original never ran on the
    inputs of ``seed`` (traced with ``sys.settrace``)."""
    first_body_line = {node.lineno: node.body[0].lineno for node in ast.walk(ast.parse(program.source))
                       if isinstance(node, ast.For)}
    module = load(program.source)
    filename = getattr(module, program.fn).__code__.co_filename
    ran: set[int] = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != filename:
            return None
        if event == "line":
            ran.add(frame.f_lineno)
        return tracer

    args = make_args(program, seed)
    sys.settrace(tracer)
    try:
        _quiet(getattr(module, program.fn), *args)
    except Exception:  # noqa: BLE001 - the judged run has the verdict
        pass
    finally:
        sys.settrace(None)
    return {line for line, body in first_body_line.items() if body not in ran}


def _zero_step(program: Program, out: Outcome, seed: int, jit: bool, grad: bool) -> None:
    """The documented zero-step limitation, told apart from a wrong rewrite.

    ``lax.scan`` traces its step once even for zero steps, so a step that
    indexes an axis of length 0 with the traced index, or uses the element of
    an empty Python list, raises while tracing where the Python loop did
    nothing; and ``jnp.array`` of an empty output list is ``float32[0]`` where
    the scan's stacked outputs are ``float32[0, *step_shape]``.  A mismatch is
    this limitation only when a rewritten loop ran no step, every difference is
    of those two forms, and the same program with steps passes completely;
    anything else stays a failure."""
    rewritten = {line for line, status, _ in out.statuses if status == "rewritten"}
    if not rewritten & loops_without_steps(program, seed):
        return
    if not all("the rewritten function raises" in f or _EMPTY_SHAPES.search(f.splitlines()[0])
               for f in out.failures):
        return
    check = Outcome(program.label)
    _judge(grown(program), check, seed, jit, grad, True)
    if check.failed or check.discarded:
        return
    out.zero_step, out.failures, out.failure_kind = out.failures, [], None


def _judge(program: Program, out: Outcome, seed: int, jit: bool, grad: bool, execute: bool) -> None:
    # ------------------------------------------------------------------ the rewrite, judged statically
    try:
        result = rewrite_source(program.source, "jax")
    except Exception as e:  # noqa: BLE001 - any exception from the tool is a failure
        out.fail("crash", f"rewrite_source raised {_error(e)}\n{traceback.format_exc()}")
        return
    if result.error is not None:
        out.fail("crash", f"rewrite_source reported an error on valid source: {result.error}")
        return
    out.statuses = [(lp.line, lp.status, lp.code) for lp in result.loops]
    out.messages = {lp.line: lp.message for lp in result.loops if lp.status != "rewritten"}
    by_line = {lp.line: lp for lp in result.loops}
    if sorted(by_line) != sorted(program.loops) or len(result.loops) != len(program.loops):
        out.fail("bad-report", f"loops reported on lines {sorted(lp.line for lp in result.loops)}, "
                               f"the program has loops on lines {sorted(program.loops)}")
        return
    for lp in result.loops:
        if lp.code == INTERNAL:
            out.fail("crash", f"line {lp.line}: internal error {lp.code}: {lp.message}")
        if lp.status not in ("rewritten", "declined", "not-candidate"):
            out.fail("bad-report", f"line {lp.line}: unexpected status {lp.status} ({lp.code})")
        if (lp.status == "rewritten") != (lp.code == "L2S000"):
            out.fail("bad-report", f"line {lp.line}: status {lp.status} with code {lp.code}")
    out.rewritten_any = any(lp.status == "rewritten" for lp in result.loops)
    out.rewritten_all = all(lp.status == "rewritten" for lp in result.loops)
    if out.rewritten_any and result.new_text is None:
        out.fail("bad-report", "a loop is reported rewritten but the text is unchanged")
    if result.new_text is not None:
        if not out.rewritten_any:
            out.fail("bad-report", "the text changed but no loop is reported rewritten")
        try:
            ast.parse(result.new_text)
        except SyntaxError as e:
            out.fail("unparseable", f"the rewritten text does not parse: {e}")
    if program.label == MUST_DECLINE:
        for line in program.must_not_rewrite:
            lp = by_line[line]
            out.forbidden.append((lp.status, lp.code))
            if lp.status == "rewritten":
                out.fail("wrong-rewrite", f"line {line}: the loop holding `{program.construct}` was rewritten")
    if out.failures or not execute:
        return

    # ------------------------------------------------------------------ the original must run
    import jax
    import jax.numpy as jnp

    args = make_args(program, seed)
    try:
        original = getattr(load(program.source), program.fn)
        want = _normal(_quiet(original, *args))
    except Exception as e:  # noqa: BLE001
        out.discarded = _error(e)
        return
    if result.new_text is None:
        return

    # ------------------------------------------------------------------ original vs rewritten
    try:
        rewritten = getattr(load(result.new_text), program.fn)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"the rewritten module does not load: {_error(e)}")
        return

    def compare(what, a, b, rtol=RTOL, atol=ATOL):
        try:
            assert_tree_close(a, b, rtol, atol, what)
        except AssertionError as e:
            out.fail("mismatch", f"{what}: {str(e).strip()}")
            return False
        return True

    def run_both(mode, fa, fb):
        """(original's result, rewritten's result), or None when the mode is not compared."""
        try:
            a = _quiet(fa)
        except Exception as e:  # noqa: BLE001
            out.skipped_modes.append(f"{mode}: original raises {_error(e)}")
            return None
        try:
            b = _quiet(fb)
        except Exception as e:  # noqa: BLE001
            out.fail("mismatch", f"{mode}: the rewritten function raises {_error(e)} where the original runs")
            return None
        return a, b

    try:
        got = _normal(_quiet(rewritten, *args))
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"eager: the rewritten function raises {_error(e)} where the original runs")
        return
    if not compare("eager output", want, got):
        return
    diff_idx = [i for i, spec in enumerate(program.args) if np.issubdtype(np.dtype(spec.dtype), np.floating)
                and (spec.kind != "list" or spec.shape[0] > 0)] if grad else []
    if not diff_idx:
        if jit:
            pair = run_both("jit", lambda: _normal(jax.jit(original)(*args)),
                            lambda: _normal(jax.jit(rewritten)(*args)))
            if pair is not None:
                compare("jit output", *pair)
        return

    # one function gives the outputs and their VJP, so that under jit one compile serves both
    primals = [args[i] for i in diff_idx]
    rng = np.random.default_rng(seed + 1)
    leaves, tree = jax.tree.flatten(_floats(want))
    cot = jax.tree.unflatten(tree, [rng.standard_normal(np.shape(x)).astype(x.dtype) for x in leaves])

    def with_vjp(fn):
        def run(primals, cot):
            def g(*diff):
                full = list(args)
                for i, d in zip(diff_idx, diff):
                    full[i] = d
                res = fn(*full)
                return _floats(res), res
            _, pull, res = jax.vjp(g, *primals, has_aux=True)
            return res, pull(cot)
        return run

    for mode, wrap in (("eager", lambda fn: fn), ("jit", jax.jit)):
        if mode == "jit" and not jit:
            continue
        pair = run_both(f"{mode} gradient", lambda: wrap(with_vjp(original))(primals, cot),
                        lambda: wrap(with_vjp(rewritten))(primals, cot))
        if pair is None:
            continue
        (res_a, grad_a), (res_b, grad_b) = pair
        if mode == "jit" and not compare("jit output", _normal(res_a), _normal(res_b)):
            return
        if not compare(f"{mode} gradient", grad_a, grad_b, GRAD_RTOL, GRAD_ATOL):
            return


# ----------------------------------------------------------------------------- tallies

@dataclass
class Tally:
    """Counts over many outcomes (the CI run and the long run print these)."""

    programs: int = 0
    must_rewrite: int = 0
    must_decline: int = 0
    discarded: int = 0
    discarded_must_rewrite: int = 0
    rewritten: int = 0  # of those, programs with every loop rewritten
    must_rewrite_run: int = 0  # must-rewrite programs that ran (not discarded; a mismatch counts, a crash not)
    declined_must_rewrite: dict = field(default_factory=dict)  # code -> count (must-rewrite not fully rewritten)
    must_decline_codes: dict = field(default_factory=dict)  # "status code" -> count, for the forbidden loops
    mismatches: int = 0
    crashes: int = 0  # crash / unparseable / bad-report
    wrong_rewrites: int = 0
    skipped_modes: int = 0
    zero_step: int = 0  # programs whose only differences are the documented zero-step limitation
    seconds: float = 0.0
    failures: list = field(default_factory=list)  # (failure text, program source), at most a few kept
    declined_examples: dict = field(default_factory=dict)  # code -> (message, source) of one example

    def add(self, program: Program, outcome: Outcome, keep: int = 20) -> None:
        self.programs += 1
        self.seconds += outcome.seconds
        if program.label == MUST_REWRITE:
            self.must_rewrite += 1
        else:
            self.must_decline += 1
            for status, code in outcome.forbidden:
                key = f"{status} {code}"
                self.must_decline_codes[key] = self.must_decline_codes.get(key, 0) + 1
        if outcome.discarded:
            self.discarded += 1
            if program.label == MUST_REWRITE:
                self.discarded_must_rewrite += 1
        if outcome.failed:
            kind = outcome.failure_kind
            if kind == "mismatch":
                self.mismatches += 1
            elif kind == "wrong-rewrite":
                self.wrong_rewrites += 1
            else:
                self.crashes += 1
            if len(self.failures) < keep:
                self.failures.append(("\n".join(outcome.failures), program.describe()))
        if outcome.skipped_modes:
            self.skipped_modes += 1
        if outcome.zero_step:
            self.zero_step += 1
        if program.label == MUST_REWRITE and not outcome.discarded and outcome.failure_kind in (None, "mismatch"):
            self.must_rewrite_run += 1
            if outcome.rewritten_all:
                self.rewritten += 1
            else:
                for line, status, code in outcome.statuses:
                    if status != "rewritten":
                        self.declined_must_rewrite[code] = self.declined_must_rewrite.get(code, 0) + 1
                        if code not in self.declined_examples:
                            self.declined_examples[code] = (outcome.messages.get(line, ""), program.source)

    @property
    def share(self) -> float:
        """Share of must-rewrite programs (that ran) rewritten completely."""
        return self.rewritten / self.must_rewrite_run if self.must_rewrite_run else 0.0

    @property
    def failed(self) -> int:
        return self.mismatches + self.crashes + self.wrong_rewrites

    def summary(self) -> dict:
        return {
            "programs": self.programs,
            "must_rewrite": self.must_rewrite,
            "must_decline": self.must_decline,
            "discarded_original_raises": self.discarded,
            "discarded_must_rewrite": self.discarded_must_rewrite,
            "must_rewrite_run": self.must_rewrite_run,
            "rewritten": self.rewritten,
            "must_rewrite_share": round(self.share, 4),
            "declined_must_rewrite_by_code": dict(sorted(self.declined_must_rewrite.items())),
            "must_decline_loops_by_status_code": dict(sorted(self.must_decline_codes.items())),
            "mismatches": self.mismatches,
            "wrong_rewrites": self.wrong_rewrites,
            "crashes": self.crashes,
            "programs_with_a_mode_not_compared": self.skipped_modes,
            "zero_step_limitation": self.zero_step,
            "seconds": round(self.seconds, 1),
            "seconds_per_program": round(self.seconds / self.programs, 3) if self.programs else 0.0,
        }

    def merge(self, other: "Tally", keep: int = 20) -> None:
        for name in ("programs", "must_rewrite", "must_decline", "discarded", "discarded_must_rewrite",
                     "rewritten", "must_rewrite_run", "mismatches", "crashes", "wrong_rewrites",
                     "skipped_modes", "zero_step", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("declined_must_rewrite", "must_decline_codes"):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        for k, v in other.declined_examples.items():
            self.declined_examples.setdefault(k, v)
        self.failures.extend(other.failures[: max(0, keep - len(self.failures))])
