"""Golden before/after files: what loop2scan makes of realistic JAX modules.

Each case is a pair in ``tests/golden/``: ``<case>.py`` (the input) and
``<case>.expected.py`` (the exact, reviewed output of ``rewrite_source``). For
every case the tests check that

1. rewriting the input gives the expected file byte for byte (line endings
   included);
2. rewriting the expected file changes nothing (idempotence);
3. input and expected modules compute the same outputs, eagerly and under
   ``jax.jit``, and the same VJPs with respect to every floating-point argument,
   for each function and argument tuple returned by ``example_inputs()``;
4. every loop of the input ends with the status and code listed in ``CASES``.

Regenerating the expected files (only on purpose, e.g. after an intended change
of the output style)::

    UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py            # every case
    UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py -k elman   # some cases

then read the whole ``git diff tests/golden`` before committing: an expected
file is reviewed output, not whatever the tool happens to print. Adding a case:
write ``tests/golden/<case>.py`` (ending with ``example_inputs()``), add its
loops to ``CASES``, regenerate that case and review the new expected file.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_tree_close, load
from loop2scan import rewrite_source

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")

R, D, N = "rewritten", "declined", "not-candidate"

# case -> every loop of the input, in source order: (line of the `for`, status, code)
CASES: dict[str, list[tuple[int, str, str]]] = {
    "elman_rnn": [(26, R, "L2S000"), (46, R, "L2S000")],
    "gru_cell_from_helper": [(37, R, "L2S000"), (44, R, "L2S000"), (58, R, "L2S000")],
    "lstm_two_carries": [(23, R, "L2S000"), (42, R, "L2S000")],
    "bidirectional": [(24, R, "L2S000"), (31, R, "L2S000"), (47, R, "L2S000")],
    "discounted_returns": [(15, R, "L2S000"), (41, R, "L2S000"), (56, R, "L2S000")],
    "running_stats": [(20, R, "L2S000"), (37, R, "L2S000")],
    "time_embedding": [(22, R, "L2S000"), (38, R, "L2S000")],
    "shifted_reads": [(20, R, "L2S000"), (34, R, "L2S000")],
    "batch_major_time_axis": [(21, R, "L2S000"), (34, R, "L2S000")],
    "prealloc_buffer": [(16, R, "L2S000"), (34, R, "L2S000")],
    "tuple_accumulator": [(21, R, "L2S000"), (36, R, "L2S000")],
    "nested_loops": [(18, R, "L2S000"), (21, R, "L2S000"), (37, R, "L2S000"), (39, R, "L2S000")],
    "key_split_carry": [(13, R, "L2S000"), (30, R, "L2S000")],
    "mixed_file": [(15, N, "L2S001"), (23, D, "L2S101"), (36, R, "L2S000")],
    "unicode_and_comments": [(25, R, "L2S000"), (44, R, "L2S000")],
    "channels_last_and_counters": [(13, R, "L2S000"), (23, R, "L2S000"), (32, R, "L2S000")],
    "emitted_style": [(20, R, "L2S000"), (31, R, "L2S000"), (41, R, "L2S000"), (51, R, "L2S000"), (61, R, "L2S000"),
                      (71, R, "L2S000"), (82, R, "L2S000"), (85, R, "L2S000"), (100, R, "L2S000"),
                      (103, R, "L2S000")],
    "module_level_steps": [(25, R, "L2S000"), (39, R, "L2S000"), (51, R, "L2S000")],
    "import_placement": [(15, R, "L2S000")],
    "layer_builders": [(23, R, "L2S000"), (31, D, "L2S501"), (41, R, "L2S000")],
}

# cases whose files must keep Windows line endings (CRLF on every line)
CRLF = {"unicode_and_comments"}


def read(path: Path) -> str:
    """The file's text, line endings untouched."""
    return path.read_bytes().decode("utf-8")


def input_path(case: str) -> Path:
    return GOLDEN / f"{case}.py"


def expected_path(case: str) -> Path:
    return GOLDEN / f"{case}.expected.py"


def rewritten_text(text: str) -> str:
    result = rewrite_source(text, "jax")
    assert result.error is None, result.error
    return text if result.new_text is None else result.new_text


def show_diff(want: str, got: str, name: str) -> str:
    lines = difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                 f"{name} (expected)", f"{name} (rewrite_source)")
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if want.replace("\r\n", "\n") == got.replace("\r\n", "\n"):
        text += "(the texts differ only in their line endings)\n"
    return text


cases = pytest.mark.parametrize("case", sorted(CASES))


def test_every_golden_file_is_a_declared_case():
    inputs = {p.name[:-3] for p in GOLDEN.glob("*.py") if not p.name.endswith(".expected.py")}
    expected = {p.name[:-len(".expected.py")] for p in GOLDEN.glob("*.expected.py")}
    assert inputs == set(CASES), f"inputs without a CASES entry or entries without input: {inputs ^ set(CASES)}"
    assert expected == set(CASES), f"expected files without a case or missing: {expected ^ set(CASES)}"


@cases
def test_line_endings(case):
    for path in (input_path(case), expected_path(case)):
        data = path.read_bytes()
        lf = data.count(b"\n")
        crlf = data.count(b"\r\n")
        assert lf > 0 and data.endswith(b"\n"), path.name
        if case in CRLF:
            assert crlf == lf, f"{path.name}: {lf - crlf} line(s) end with a bare LF"
        else:
            assert b"\r" not in data, f"{path.name}: carriage return in an LF file"


@cases
def test_rewrite_matches_expected_file(case):
    got = rewritten_text(read(input_path(case)))
    if UPDATE:
        expected_path(case).write_bytes(got.encode("utf-8"))
    want = read(expected_path(case))
    if got != want:
        pytest.fail("rewrite_source output differs from the expected file:\n" + show_diff(want, got, case),
                    pytrace=False)


@cases
def test_expected_file_is_a_fixed_point(case):
    text = read(expected_path(case))
    result = rewrite_source(text, "jax")
    assert result.error is None, result.error
    again = [(loop.line, loop.status, loop.code) for loop in result.loops if loop.status == "rewritten"]
    if result.new_text is not None or again:
        pytest.fail(f"rewriting the expected file changes it again: {again}\n"
                    + show_diff(text, result.new_text or text, case), pytrace=False)


@cases
def test_loop_statuses(case):
    result = rewrite_source(read(input_path(case)), "jax")
    assert result.error is None, result.error
    got = [(loop.line, loop.status, loop.code) for loop in result.loops]
    detail = "\n".join(f"  line {loop.line}: {loop.status} {loop.code} {loop.message}" for loop in result.loops)
    assert got == CASES[case], f"loop statuses differ from CASES[{case!r}]:\n{detail}"


# ----------------------------------------------------------------------------- execution

def _is_float(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and jnp.issubdtype(x.dtype, jnp.floating)


def _float_only(out):
    """Outputs as seen by a VJP: non-float leaves become float zeros."""
    return jax.tree.map(lambda x: x if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
                        else jnp.zeros((), jnp.float32), out)


def _compare(name: str, a, b, args: tuple, rng: np.random.Generator) -> None:
    """Outputs eagerly; then, in one jitted function per side, the outputs under
    ``jax.jit`` and the VJP with a random cotangent with respect to every
    floating-point leaf of the arguments (the other arguments are constants
    of the traced function, so Python ints stay Python ints)."""
    assert_tree_close(a(*args), b(*args), what=f"{name}: eager output")

    leaves, tree = jax.tree.flatten(args)
    diff = [i for i, x in enumerate(leaves) if _is_float(x)]
    assert diff, f"{name}: no floating-point argument to differentiate"

    def part(f):
        def g(*primals):
            full = list(leaves)
            for i, p in zip(diff, primals):
                full[i] = p
            out = f(*jax.tree.unflatten(tree, full))
            return _float_only(out), out
        return g

    def jitted(f):
        def run(primals, cot):
            _, vjp, out = jax.vjp(part(f), *primals, has_aux=True)
            return out, vjp(cot)
        return jax.jit(run)

    primals = [leaves[i] for i in diff]
    shapes, _ = jax.eval_shape(part(a), *primals)
    cot = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
    out_a, grad_a = jitted(a)(primals, cot)
    out_b, grad_b = jitted(b)(primals, cot)
    assert_tree_close(out_a, out_b, what=f"{name}: jit output")
    assert_tree_close(grad_a, grad_b, rtol=1e-4, atol=1e-5, what=f"{name}: gradient")


@cases
def test_expected_file_computes_what_the_input_computes(case):
    before = load(read(input_path(case)), f"golden_{case}_input")
    after = load(read(expected_path(case)), f"golden_{case}_expected")
    inputs = before.example_inputs()
    assert inputs, "example_inputs() returned no function"
    rng = np.random.default_rng(0)
    for fn, arg_list in inputs.items():
        assert arg_list, f"no arguments for {fn}"
        for k, args in enumerate(arg_list):
            _compare(f"{fn} #{k}", getattr(before, fn), getattr(after, fn), tuple(args), rng)
