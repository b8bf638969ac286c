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
left by a zero-step loop is the float32 scalar JAX would make of it; a leaf
without a dtype of its own, a Python number or a weakly typed array, takes
the rewritten leaf's dtype of the same kind, which matters with 64-bit
types), with ``helpers.assert_tree_close``.  Gradients: a VJP with a random
cotangent with respect to every floating-point argument, eagerly and inside
one ``jax.jit``-compiled function.  A program's extra dtype modes
(``Program.modes``: ``"strict"`` dtype promotion, ``"x64"``) repeat the
comparison of outputs, eagerly and under ``jax.jit``, inside
``jax.numpy_dtype_promotion("strict")`` / ``jax.enable_x64(True)``.
A mode in which the *original* raises (a NumPy buffer written under
``jax.jit``, strict promotion of a mixed-dtype expression) is not compared,
and is counted.

A package program (``Program.files``) is written to a temporary directory
twice, one copy is rewritten in place with ``loop2scan.api.run`` (the whole
project, as the command line does), and the original and rewritten packages
are imported afresh (same package name, ``sys.modules`` cleared between
them); the outputs at ``Program.stacked_outputs`` (per-layer parameter
lists) are compared after :func:`loop2scan.layout.stack_layers` of the
original's (when the rewritten project returns them stacked), and the
gradient is that of the first output with respect to the array arguments.
A loop a must-decline package forbids may still be rewritten with the list
layout kept (each call stacks the list, which no importer sees): that
rewrite is run, and is a wrong rewrite only if it differs or raises.

A torch program (``Program.klass == "torch"``, :mod:`fuzz.torch_programs`) is
rewritten with the ``torch_xla`` target and run on the XLA device in eval mode
(:func:`_run_torch`): the rewritten model loads the original's ``state_dict``,
and outputs, gradients with respect to the inputs and every parameter, the
inputs after the call and the state after it (buffers, attributes of every
submodule, the module's lists and dicts) are compared, all read back after one
``torch_xla.sync()``.  A must-decline torch program whose forbidden loop was
rewritten is run as well, and the failure says whether the rewrite differs on
these inputs; one whose loops all stayed loops is not run.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import io
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fuzz.program import MUST_DECLINE, MUST_REWRITE, Program
from helpers import assert_tree_close, dtype_mode
from loop2scan import rewrite_source
from loop2scan.policy import Policy

# the programs are judged for correctness, not for whether a scan pays: their loops are short
# (0 to a few steps) to keep the runs fast, so no trip count is too small here
FUZZ_POLICY = Policy(min_trip_count=0)

RTOL, ATOL = 1e-5, 1e-5  # outputs
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-4  # gradients

INTERNAL = "L2S901"
#: The status recorded for a package's forbidden loop rewritten with the list layout kept (judged by running it).
KEPT_LAYOUT = "rewritten-list-layout-kept"


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


_modules = itertools.count()


def load(src: str) -> types.ModuleType:
    """Execute ``src`` as a fresh module, registered in ``sys.modules`` while it
    runs (a dataclass looks its module up there)."""
    name = f"_l2s_fuzz_module_{next(_modules)}"
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    try:
        exec(compile(src, module.__file__, "exec"), module.__dict__)  # noqa: S102 - the program under test
    finally:
        del sys.modules[name]
    return module


def make_args(program: Program, seed: int = 0, module=None) -> tuple:
    """Arguments for ``program.fn`` (see :class:`fuzz.program.ArgSpec`); the
    ``python`` ones are evaluated in ``module`` (the original's or the
    rewritten one's: each gets objects of its own classes).  The same seed
    gives the same numbers."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    out = []
    for i, spec in enumerate(program.args):
        if not spec.passed:
            continue
        if spec.kind in ("array", "list", "numpy"):
            value = (rng.standard_normal(spec.shape) * spec.scale).astype(spec.dtype)
            if spec.kind == "numpy":
                out.append(value)
            else:
                out.append([jnp.asarray(v) for v in value] if spec.kind == "list" else jnp.asarray(value))
        elif spec.kind == "ints":
            out.append(jnp.asarray(rng.integers(0, spec.high, spec.shape).astype(np.int32)))
        elif spec.kind == "key":
            out.append(jax.random.PRNGKey(seed))
        elif spec.kind == "python":
            values = np.random.default_rng([seed, i])  # its own stream: the other arguments stay the same

            def rand(*shape, values=values):
                return jnp.asarray(values.standard_normal(shape).astype(np.float32))

            namespace = dict(vars(module)) if module is not None else {"jax": jax, "jnp": jnp, "np": np}
            namespace["rand"] = rand
            out.append(eval(spec.value, namespace))  # noqa: S307 - the grammar's own expressions
        else:
            raise ValueError(f"unknown argument kind {spec.kind!r}")
    return tuple(out)


def _normal(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, tree)


def _weak_like(want, got):
    """``want`` (the original's normalised outputs) with each leaf that had no
    dtype of its own (a Python number, or a weakly typed array: a value that
    never met an array, such as ``total = 0.0`` after zero steps) cast to the
    dtype of the rewritten function's leaf of the same kind.  With 64-bit
    types enabled JAX would make such a leaf float64 where the scan's carry,
    having met float32 in its traced step, is float32."""
    import jax
    import jax.numpy as jnp

    la, ta = jax.tree.flatten(want)
    lb, tb = jax.tree.flatten(got)
    if len(la) != len(lb):
        return want
    out = []
    for x, y in zip(la, lb):
        if getattr(x, "weak_type", False) and x.dtype != y.dtype and (
                jnp.issubdtype(x.dtype, jnp.floating) == jnp.issubdtype(y.dtype, jnp.floating)):
            x = x.astype(y.dtype)
        out.append(x)
    return jax.tree.unflatten(ta, out)


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
        if program.is_package:
            _judge_package(program, out, seed, jit, grad, execute)
            return out
        if program.klass == "nnx":
            _judge_nnx(program, out, seed, execute)
            return out
        if program.klass == "torch":
            _judge_torch(program, out, seed, execute)
            return out
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

    args = make_args(program, seed, module)
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
    result = _judge_static(program, out, "jax")
    if result is None or out.failures or not execute:
        return
    _run_and_compare(program, out, result, seed, jit, grad)


def _judge_static(program: Program, out: Outcome, framework: str):
    """Rewrite the program and judge the result without running it; the
    rewrite result, or ``None`` when the tool failed."""
    try:
        result = rewrite_source(program.source, framework, policy=FUZZ_POLICY)
    except Exception as e:  # noqa: BLE001 - any exception from the tool is a failure
        out.fail("crash", f"rewrite_source raised {_error(e)}\n{traceback.format_exc()}")
        return None
    if result.error is not None:
        out.fail("crash", f"rewrite_source reported an error on valid source: {result.error}")
        return None
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
    if program.free_loops:
        out.statuses = [st for st in out.statuses if st[0] not in program.free_loops]  # what the label speaks about
        out.rewritten_all = all(st[1] == "rewritten" for st in out.statuses)
    return result


def _run_and_compare(program: Program, out: Outcome, result, seed: int, jit: bool, grad: bool) -> None:
    # ------------------------------------------------------------------ the original must run
    try:
        module = load(program.source)
        original = getattr(module, program.fn)
        args = make_args(program, seed, module)
        want = _normal(_quiet(original, *args))  # Python numbers become weakly typed arrays
    except Exception as e:  # noqa: BLE001
        out.discarded = _error(e)
        return
    if result.new_text is None:
        return

    # ------------------------------------------------------------------ original vs rewritten
    try:
        new_module = load(result.new_text)
        rewritten = getattr(new_module, program.fn)
        new_args = make_args(program, seed, new_module)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"the rewritten module does not load: {_error(e)}")
        return
    _compare_functions(program, out, (original, args), (rewritten, new_args), seed, jit, grad, want=want)


def _compare_functions(program: Program, out: Outcome, a, b, seed: int, jit: bool, grad: bool,
                       convert=None, want=None) -> None:
    """Compare ``a = (function, args)`` with ``b`` in the default mode, then in
    each of ``program.modes``.  ``convert`` maps the original's outputs to the
    rewritten one's layout (packages: parameter lists stacked); ``want`` is the
    original's eager output in the default mode, when already computed."""
    for mode in ("default",) + tuple(program.modes):
        with dtype_mode(mode):
            if not _compare_in_mode(program, out, a, b, seed, jit, grad, mode, convert or (lambda tree: tree),
                                    want if mode == "default" else None):
                return


def _compare_in_mode(program: Program, out: Outcome, a, b, seed: int, jit: bool, grad: bool, mode: str,
                     convert, want=None) -> bool:
    """One mode: outputs eagerly, then outputs and VJP eagerly and under
    ``jax.jit``.  False when the comparison stopped (a failure)."""
    import jax

    original, args = a
    rewritten, new_args = b
    prefix = "" if mode == "default" else f"{mode}: "

    def compare(what, x, y, rtol=RTOL, atol=ATOL):
        try:
            assert_tree_close(x, y, rtol, atol, prefix + what)
        except AssertionError as e:
            out.fail("mismatch", f"{prefix}{what}: {str(e).strip()}")
            return False
        return True

    def run_both(what, fa, fb):
        """(original's result, rewritten's result), or None when the mode is not compared."""
        try:
            x = _quiet(fa)
        except Exception as e:  # noqa: BLE001
            out.skipped_modes.append(f"{prefix}{what}: original raises {_error(e)}")
            return None
        try:
            y = _quiet(fb)
        except Exception as e:  # noqa: BLE001
            out.fail("mismatch", f"{prefix}{what}: the rewritten function raises {_error(e)} where the original runs")
            return None
        return x, y

    if want is None:
        pair = run_both("eager", lambda: _normal(convert(original(*args))), lambda: _normal(rewritten(*new_args)))
    else:
        pair = run_both("eager", lambda: want, lambda: _normal(rewritten(*new_args)))
    if pair is None:
        return not out.failures
    want, got = pair
    want = _weak_like(want, got)
    if not compare("eager output", want, got):
        return False
    passed = [spec for spec in program.args if spec.passed]
    # the extra dtype modes compare outputs (eagerly and under jit), not gradients
    diff_idx = [i for i, spec in enumerate(passed) if spec.differentiable
                and (spec.kind != "list" or spec.shape[0] > 0)] if grad and mode == "default" else []
    if not diff_idx:
        if jit:
            pair = run_both("jit", lambda: _normal(convert(jax.jit(original)(*args))),
                            lambda: _normal(jax.jit(rewritten)(*new_args)))
            if pair is not None:
                return compare("jit output", _weak_like(*pair), pair[1])
        return not out.failures

    # one function gives the outputs and their VJP, so that under jit one compile serves both;
    # a package's gradient is that of its first output (the parameter lists differ in layout)
    first_only = program.is_package
    rng = np.random.default_rng(seed + 1)
    leaves, tree = jax.tree.flatten(_floats(want[0] if first_only else want))
    cot_leaves = [rng.standard_normal(np.shape(x)).astype(x.dtype) for x in leaves]
    cot = jax.tree.unflatten(tree, cot_leaves)
    # the same leaves in the rewritten function's own output structure (its NamedTuple classes are its own)
    cot_b = jax.tree.unflatten(jax.tree.structure(_floats(got[0] if first_only else got)), cot_leaves)

    def with_vjp(fn, fargs):
        primals = [fargs[i] for i in diff_idx]

        def run(primals, cot):
            def g(*diff):
                full = list(fargs)
                for i, d in zip(diff_idx, diff):
                    full[i] = d
                res = fn(*full)
                return _floats(res[0] if first_only else res), res
            _, pull, res = jax.vjp(g, *primals, has_aux=True)
            return res, pull(cot)
        return run, primals

    for how, wrap in (("eager", lambda fn: fn), ("jit", jax.jit)):
        if how == "jit" and not jit:
            continue
        run_a, primals_a = with_vjp(original, args)
        run_b, primals_b = with_vjp(rewritten, new_args)
        pair = run_both(f"{how} gradient", lambda: wrap(run_a)(primals_a, cot), lambda: wrap(run_b)(primals_b, cot_b))
        if pair is None:
            continue
        (res_a, grad_a), (res_b, grad_b) = pair
        res_a = convert(res_a)  # outside any trace (the layout conversion is NumPy's)
        if how == "jit" and not compare("jit output", _weak_like(_normal(res_a), _normal(res_b)), _normal(res_b)):
            return False
        if not compare(f"{how} gradient", grad_a, grad_b, GRAD_RTOL, GRAD_ATOL):
            return False
    return not out.failures


# ----------------------------------------------------------------------------- NNX models

def _judge_nnx(program: Program, out: Outcome, seed: int, execute: bool) -> None:
    """An NNX program (:mod:`fuzz.nnx_programs`): ``build(rngs)`` of the original
    and of the rewritten module, the original's state copied into the
    rewritten model's layout, two calls (RNG counts advance), the state after
    them, and the gradients with respect to every ``nnx.Param`` and the inputs."""
    result = _judge_static(program, out, "flax")
    if result is None or out.failures or not execute:
        return
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from loop2scan.check.flax_backend import copy_into, numeric, pure_state, stacked_like

    try:
        module = load(program.source)
        original = module.build(nnx.Rngs(seed))
        args = make_args(program, seed, module)
        _quiet(original, *args)
        original = module.build(nnx.Rngs(seed))  # afresh: the first call advanced its RNG counts
    except Exception as e:  # noqa: BLE001
        out.discarded = _error(e)
        return
    if result.new_text is None:
        return
    try:
        new_module = load(result.new_text)
        rewritten = new_module.build(nnx.Rngs(seed + 1))
        copy_into(original, rewritten)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"the rewritten model cannot be built or take the original's state: {_error(e)}")
        return

    def compare(what, x, y, rtol=RTOL, atol=ATOL) -> bool:
        try:
            assert_tree_close(x, y, rtol, atol, what)
        except AssertionError as e:
            out.fail("mismatch", f"{what}: {str(e).strip()}")
            return False
        return True

    for call in range(2):
        want = _quiet(original, *args)
        try:
            got = _quiet(rewritten, *args)
        except Exception as e:  # noqa: BLE001
            out.fail("mismatch", f"call {call + 1}: the rewritten model raises {_error(e)} where the original runs")
            return
        if not compare(f"call {call + 1} output", want, got) or \
                not compare(f"state after call {call + 1}", numeric(stacked_like(pure_state(original),
                                                                                 pure_state(rewritten))),
                            numeric(pure_state(rewritten))):
            return

    def loss(model, x, *rest):
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(model(x, *rest)))

    grad = nnx.grad(loss, argnums=(0, 1))
    try:
        (g_model_a, g_x_a) = _quiet(grad, original, *args)
        (g_model_b, g_x_b) = _quiet(grad, rewritten, *args)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"gradient: {_error(e)}")
        return
    after = nnx.to_pure_dict(g_model_b)
    compare("input gradient", g_x_a, g_x_b, GRAD_RTOL, GRAD_ATOL) and \
        compare("parameter gradient", stacked_like(nnx.to_pure_dict(g_model_a), after), after, GRAD_RTOL, GRAD_ATOL)


# ----------------------------------------------------------------------------- torch models

def torch_args(program: Program, seed: int = 0) -> tuple[list, dict]:
    """The arguments of a torch program's call (:mod:`fuzz.torch_programs`), on
    the host: float32 tensors (normal values times ``scale``) and boolean
    tensors (``dtype="bool"``: about 70% true), by position, or by keyword when
    the parameter has a default; the Python values passed (``kind="python"``),
    by keyword.  The same seed gives the same values."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    positional, keywords = [], {}
    for spec in program.args:
        if spec.kind == "array":
            if spec.dtype == "bool":
                value = torch.rand(spec.shape, generator=gen) > 0.3
            else:
                value = torch.randn(spec.shape, generator=gen, dtype=getattr(torch, spec.dtype)) * spec.scale
            if spec.default:
                keywords[spec.name] = value
            else:
                positional.append(value)
        elif spec.kind == "python":
            keywords[spec.name] = ast.literal_eval(spec.value)
        elif spec.kind != "omitted":
            raise ValueError(f"a torch program takes no argument of kind {spec.kind!r}")
    return positional, keywords


def _judge_torch(program: Program, out: Outcome, seed: int, execute: bool) -> None:
    """A torch program (:mod:`fuzz.torch_programs`), rewritten with the
    ``torch_xla`` target, judged statically, then run (:func:`_run_torch`).  A
    must-decline program whose forbidden loop was rewritten is run too: the
    failure says whether the rewrite computes something else on these inputs."""
    result = _judge_static(program, out, "torch_xla")
    if result is None or not execute:
        return
    if out.failures:
        if not all(f.startswith("[wrong-rewrite]") for f in out.failures):
            return
        check = Outcome(program.label)
        _run_torch(program, check, result, seed)
        if check.discarded:
            out.failures.append(f"executed: not compared, the original raises {check.discarded}")
        elif check.failures:
            out.failures += [f"executed: {f}" for f in check.failures]
        else:
            out.failures.append("executed: the same outputs, gradients, inputs and state on these inputs")
        return
    if program.label == MUST_DECLINE and result.new_text is None:
        return  # nothing to compare (a must-rewrite program's original still runs: its label is checked)
    _run_torch(program, out, result, seed)


def _run_torch(program: Program, out: Outcome, result, seed: int) -> None:
    """``build()`` of the original and of the rewritten module after the same
    ``torch.manual_seed``, the rewritten model given the original's
    ``state_dict`` (``strict=True``), both run on the XLA device in eval mode:
    outputs, the gradients of one random projection of the outputs with
    respect to every floating-point input and every parameter, the inputs
    after the call (a rewrite must not change what the caller sees) and the
    state after it (buffers, attributes of the model and its submodules,
    containers of the module).  Both versions' graphs are built first and run
    by one ``torch_xla.sync()``, before anything is read back."""
    os.environ.setdefault("PJRT_DEVICE", "CPU")
    import torch
    import torch_xla

    device = torch_xla.device()
    host_args, host_kwargs = torch_args(program, seed)

    def prepare(fn):
        """The model on the device in eval mode, its inputs (floating-point ones
        requiring gradients) and its trainable parameters."""
        if isinstance(fn, torch.nn.Module):
            fn = fn.to(device).eval()
            params = [(f"parameter {name}", p) for name, p in fn.named_parameters() if p.requires_grad]
        else:
            params = []
        inputs = [a.to(device).requires_grad_(a.is_floating_point()) for a in host_args]
        kwargs = {k: v.to(device).requires_grad_(v.is_floating_point()) if isinstance(v, torch.Tensor) else v
                  for k, v in host_kwargs.items()}
        return fn, inputs, kwargs, params

    def call(module, fn, inputs, kwargs, params):
        """Outputs (flattened), gradients (None: nothing to differentiate), the
        differentiated values, the state after the call; nothing synced."""
        outputs = _torch_leaves(_quiet(lambda: fn(*inputs, **kwargs)))
        state = _torch_state(module, fn)
        tensors = [(f"input {i}", x) for i, x in enumerate(inputs)] + \
            [(f"input {k}", v) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
        wrt = [(name, x) for name, x in tensors if x.requires_grad] + params
        diff = [o for o in outputs if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point()]
        if not diff or not wrt:
            return outputs, None, wrt, state, tensors
        gen = torch.Generator().manual_seed(seed + 1)
        loss = sum((o * torch.randn(o.shape, generator=gen).to(device)).sum() for o in diff)
        grads = torch.autograd.grad(loss, [x for _, x in wrt], allow_unused=True)
        return outputs, grads, wrt, state, tensors

    try:
        module = load(program.source)
        torch.manual_seed(seed)
        original = prepare(module.build())
        want = call(module, *original)
    except Exception as e:  # noqa: BLE001
        out.discarded = _error(e)
        return
    if result.new_text is None:
        return
    try:
        new_module = load(result.new_text)
        torch.manual_seed(seed)
        built = new_module.build()
        if isinstance(built, torch.nn.Module):
            built.load_state_dict(original[0].state_dict(), strict=True)
        rewritten = prepare(built)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"the rewritten model cannot be built or take the original's state_dict: {_error(e)}")
        return
    try:
        got = call(new_module, *rewritten)
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"the rewritten model raises {_error(e)} where the original runs")
        return
    try:
        torch_xla.sync()  # one graph for both versions, before anything is read back
    except Exception as e:  # noqa: BLE001
        out.fail("mismatch", f"running the graphs of both versions raises {_error(e)}")
        return

    (outs_a, grads_a, wrt, state_a, inputs_a), (outs_b, grads_b, _, state_b, inputs_b) = want, got
    if (grads_a is None) != (grads_b is None):
        out.fail("mismatch", f"gradients: {'none' if grads_a is None else 'some'} before, "
                             f"{'none' if grads_b is None else 'some'} after")
        return
    checks = [("output", [f"{i}" for i in range(len(outs_a))], outs_a, outs_b, RTOL, ATOL)]
    if grads_a is not None:
        checks.append(("gradient", [n for n, _ in wrt], grads_a, grads_b, GRAD_RTOL, GRAD_ATOL))
    checks += [("input after the call:", [n for n, _ in inputs_a], [x for _, x in inputs_a],
                [x for _, x in inputs_b], RTOL, ATOL)]
    if [n for n, _ in state_a] != [n for n, _ in state_b]:
        out.fail("mismatch", f"state after the call: {[n for n, _ in state_a]} before, "
                             f"{[n for n, _ in state_b]} after")
        return
    checks.append(("state after the call:", [n for n, _ in state_a], [v for _, v in state_a],
                   [v for _, v in state_b], RTOL, ATOL))
    for what, names, xs, ys, rtol, atol in checks:
        if len(xs) != len(ys):
            out.fail("mismatch", f"{what}s: {len(xs)} before, {len(ys)} after")
            return
        for name, x, y in zip(names, xs, ys):
            problem = _torch_difference(x, y, rtol, atol)
            if problem:
                out.fail("mismatch", f"{what} {name}: {problem}")
                return


def _torch_state(module, fn) -> list:
    """What a call may change besides its outputs: the containers of the
    program's module (a list appended to), and the buffers and plain
    attributes of the model and each of its submodules (a counter, a tensor
    kept from the last call)."""
    import torch

    out = []
    for name, value in sorted(vars(module).items()):
        if not name.startswith("__") and isinstance(value, (list, dict, set)):
            out.append((f"module `{name}`", value))
    if isinstance(fn, torch.nn.Module):
        internals = set(vars(torch.nn.Module())) | {"training"}
        for prefix, m in fn.named_modules():
            where = f"{prefix}." if prefix else ""
            for name, b in m.named_buffers(recurse=False):
                out.append((f"buffer `{where}{name}`", b))
            for key, value in sorted(vars(m).items()):
                if key not in internals:
                    out.append((f"attribute `{where}{key}`", value))
    return out


def _torch_leaves(x) -> list:
    """The leaves of a call's result: tensors and Python values, through tuples, lists and dicts."""
    if isinstance(x, (tuple, list)):
        return [leaf for v in x for leaf in _torch_leaves(v)]
    if isinstance(x, dict):
        return [leaf for k in sorted(x) for leaf in _torch_leaves(x[k])]
    return [x]


def _torch_difference(x, y, rtol: float, atol: float) -> Optional[str]:
    """What differs between two values (tensors, read back here; None for a
    gradient that does not reach a value; containers, by type and length;
    other Python values, by ``repr``: each version's classes are its own), or
    None.  A missing gradient equals a zero one."""
    import torch

    if isinstance(x, (list, tuple, dict, set)) or isinstance(y, (list, tuple, dict, set)):
        a, b = (f"{type(v).__name__} of {len(v)}" if isinstance(v, (list, tuple, dict, set)) else type(v).__name__
                for v in (x, y))
        return None if a == b else f"{a} before, {b} after"
    for v in (x, y):
        if isinstance(v, torch.Tensor):
            try:
                v.detach().cpu()
            except Exception as e:  # noqa: BLE001 - a traced value kept past the call, say
                return f"a tensor that cannot be read back after the call ({_error(e)})"
    x, y = (v.detach().cpu() if isinstance(v, torch.Tensor) else v for v in (x, y))
    if x is None and y is None:
        return None
    if x is None or y is None:
        t = y if x is None else x
        if isinstance(t, torch.Tensor) and not bool(t.any()):
            return None
        return f"{'no gradient' if x is None else 'a value'} before, {'no gradient' if y is None else 'a value'} after"
    if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
        return f"{type(x).__name__} before, {type(y).__name__} after"
    if not isinstance(x, torch.Tensor):
        return None if repr(x) == repr(y) else f"{_short(x)} before, {_short(y)} after"
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{x.dtype}{list(x.shape)} before, {y.dtype}{list(y.shape)} after"
    try:
        torch.testing.assert_close(y, x, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as e:
        return " ".join(str(e).split())
    return None


def _short(x, width: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= width else text[:width - 3] + "..."


# ----------------------------------------------------------------------------- packages

def _write_package(root: Path, files) -> None:
    for rel, text in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _import_fresh(root: Path, module: str, package: str):
    """Import ``module`` (dotted) of ``package`` from ``root`` afresh, leaving
    no module of the package behind in ``sys.modules``."""
    def forget():
        for name in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[name]

    forget()
    importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))
        forget()


def _judge_package(program: Program, out: Outcome, seed: int, jit: bool, grad: bool, execute: bool) -> None:
    from loop2scan.api import Options, run
    from loop2scan.layout import stack_layers

    package = program.files[0][0].split("/")[0]
    module_name = program.entry[:-len(".py")].replace("/", ".")
    with tempfile.TemporaryDirectory(prefix="l2s_fuzz_") as tmp:
        before, after = Path(tmp, "before"), Path(tmp, "after")
        _write_package(before, program.files)
        shutil.copytree(before, after)
        # ------------------------------------------------------------------ the rewrite, judged statically
        try:
            report = run([str(after)], Options(write=True, jobs=1, min_trip_count=FUZZ_POLICY.min_trip_count))
        except Exception as e:  # noqa: BLE001 - any exception from the tool is a failure
            out.fail("crash", f"loop2scan.api.run raised {_error(e)}\n{traceback.format_exc()}")
            return
        for f in report.errors:
            out.fail("crash", f"{f.path}: {f.error}")
        if out.failures:
            return
        by_loop = {}
        for f in report.files:
            rel = Path(os.path.relpath(f.path, after)).as_posix()
            for lp in f.loops:
                by_loop[(rel, lp.line)] = lp
                if lp.code == INTERNAL:
                    out.fail("crash", f"{rel}:{lp.line}: internal error {lp.code}: {lp.message}")
                if (lp.status == "rewritten") != (lp.code == "L2S000"):
                    out.fail("bad-report", f"{rel}:{lp.line}: status {lp.status} with code {lp.code}")
            if f.new_text is not None:
                try:
                    ast.parse(f.new_text)
                except SyntaxError as e:
                    out.fail("unparseable", f"{rel}: the rewritten text does not parse: {e}")
        out.statuses = [(key, lp.status, lp.code) for key, lp in sorted(by_loop.items())]
        out.messages = {key: lp.message for key, lp in by_loop.items() if lp.status != "rewritten"}
        if sorted(by_loop) != sorted(program.loops):
            out.fail("bad-report", f"loops reported at {sorted(by_loop)}, the package has loops at "
                                   f"{sorted(program.loops)}")
            return
        out.rewritten_any = any(lp.status == "rewritten" for lp in by_loop.values())
        out.rewritten_all = all(lp.status == "rewritten" for key, lp in by_loop.items()
                                if key not in program.free_loops)
        out.statuses = [s for s in out.statuses if s[0] not in program.free_loops]  # what the label speaks about
        # a forbidden loop may still be rewritten with the list layout kept (each call stacks the
        # list, which the importers' uses cannot see): that is judged by running it; a rewrite
        # that changed the builder (the stacked layout) is what the construct forbids
        builder = f"{package}/params.py"
        layout_changed = any(f.changed for f in report.files
                             if Path(os.path.relpath(f.path, after)).as_posix() == builder)
        kept_layout_rewrite = False
        if program.label == MUST_DECLINE:
            for key in program.must_not_rewrite:
                lp = by_loop[key]
                status = lp.status if lp.status != "rewritten" or layout_changed else KEPT_LAYOUT
                out.forbidden.append((status, lp.code))
                if lp.status != "rewritten":
                    continue
                if layout_changed:
                    out.fail("wrong-rewrite", f"{key[0]}:{key[1]}: the loop over the parameter list was rewritten "
                                              f"with the stacked layout, which `{program.construct}` forbids")
                else:
                    kept_layout_rewrite = True
        if out.failures or not execute:
            return

        # ------------------------------------------------------------------ run both
        try:
            original = getattr(_import_fresh(before, module_name, package), program.fn)
            args = make_args(program, seed)
            _quiet(original, *args)
        except Exception as e:  # noqa: BLE001
            out.discarded = _error(e)
            return
        if not any(f.changed for f in report.files):
            return
        try:
            rewritten = getattr(_import_fresh(after, module_name, package), program.fn)
            got = _quiet(rewritten, *args)
        except Exception as e:  # noqa: BLE001
            kind = "wrong-rewrite" if kept_layout_rewrite else "mismatch"
            out.fail(kind, f"the rewritten package raises {_error(e)} where the original runs")
            return
        # parameter lists the rewritten project returns stacked are compared with the original's stacked
        stacked = [i for i in program.stacked_outputs if not isinstance(got[i], list)]

        def convert(outputs):
            outputs = list(outputs)
            for i in stacked:
                outputs[i] = stack_layers(outputs[i])
            return tuple(outputs)

        _compare_functions(program, out, (original, args), (rewritten, args), seed, jit, grad, convert)
        if kept_layout_rewrite and out.failure_kind == "mismatch":
            out.failure_kind = "wrong-rewrite"  # the forbidden loop's rewrite, run: it differs


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
    modes_compared: int = 0  # programs compared in extra dtype modes
    by_class: dict = field(default_factory=dict)  # class -> counts (see `_class_counts`)

    def add(self, program: Program, outcome: Outcome, keep: int = 20) -> None:
        self.programs += 1
        self.seconds += outcome.seconds
        _class_counts(self.by_class.setdefault(program.klass, {}), program, outcome)
        if program.modes and outcome.rewritten_any and not outcome.discarded and outcome.failure_kind in (
                None, "mismatch"):
            self.modes_compared += 1
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
            "programs_compared_in_extra_modes": self.modes_compared,
            "by_class": {k: dict(sorted(v.items())) for k, v in sorted(self.by_class.items())},
            "seconds": round(self.seconds, 1),
            "seconds_per_program": round(self.seconds / self.programs, 3) if self.programs else 0.0,
        }

    def merge(self, other: "Tally", keep: int = 20) -> None:
        for name in ("programs", "must_rewrite", "must_decline", "discarded", "discarded_must_rewrite",
                     "rewritten", "must_rewrite_run", "mismatches", "crashes", "wrong_rewrites",
                     "skipped_modes", "zero_step", "seconds", "modes_compared"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for klass, counts in other.by_class.items():
            mine = self.by_class.setdefault(klass, {})
            for k, v in counts.items():
                if isinstance(v, dict):
                    sub = mine.setdefault(k, {})
                    for kk, vv in v.items():
                        sub[kk] = sub.get(kk, 0) + vv
                else:
                    mine[k] = mine.get(k, 0) + v
        for name in ("declined_must_rewrite", "must_decline_codes"):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        for k, v in other.declined_examples.items():
            self.declined_examples.setdefault(k, v)
        self.failures.extend(other.failures[: max(0, keep - len(self.failures))])


def _class_counts(counts: dict, program: Program, outcome: Outcome) -> None:
    """One program's contribution to its class's counts: programs, labels,
    discarded, failures by kind, must-rewrite programs run and rewritten
    completely, codes of declined must-rewrite loops, and status and code of
    each loop a must-decline construct forbids."""
    def bump(key, sub=None):
        if sub is None:
            counts[key] = counts.get(key, 0) + 1
        else:
            d = counts.setdefault(key, {})
            d[sub] = d.get(sub, 0) + 1

    bump("programs")
    bump("must_rewrite" if program.label == MUST_REWRITE else "must_decline")
    if outcome.discarded:
        bump("discarded")
    if outcome.failed:
        bump("failures", outcome.failure_kind)
    if outcome.skipped_modes:
        bump("programs_with_a_mode_not_compared")
    if program.label == MUST_REWRITE and not outcome.discarded and outcome.failure_kind in (None, "mismatch"):
        bump("must_rewrite_run")
        if outcome.rewritten_all:
            bump("rewritten")
        for _, status, code in outcome.statuses:
            if status != "rewritten":
                bump("declined_must_rewrite_by_code", code)
    for status, code in outcome.forbidden:
        bump("must_decline_loops_by_status_code", f"{status} {code}")


def confirm_wrong_rewrite(program: Program, seed: int = 0, jit: bool = True, grad: bool = True) -> Outcome:
    """Run a must-decline program whose forbidden loop was rewritten as if it
    were must-rewrite: its failures show what the rewrite does wrong (the
    rewritten function raising where the original runs, or different
    numbers); none means the rewrite computed the same values on these inputs."""
    return run_program(dataclasses.replace(program, label=MUST_REWRITE), seed, jit, grad)
