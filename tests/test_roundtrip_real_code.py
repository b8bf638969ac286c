"""Round trip on real code: copies of the installed ``jax`` and ``flax`` sources.

``loop2scan rewrite --write`` runs (through :func:`loop2scan.api.run`) on a
copy of each package in ``tmp_path`` and must:

* not crash: no file reported with an error, no loop declined as an
  internal limitation (``L2S901``, the emitter failing);
* leave every rewritten file parseable (``ast.parse``) and compilable;
* change nothing on a second ``--write`` (the whole tree byte-identical);
* leave every file without a rewrite byte-identical to the original (all
  files are compared, ``.py`` or not), and change exactly the files the report
  says were written;
* leave no temporary file behind.

A fast, deterministic subset runs by default: every file in which loop2scan
rewrote something when this test was written (``KNOWN_REWRITES``), the files
with the most ``for`` loops, and a hash-chosen sample of the others.  With
``LOOP2SCAN_FULL_ROUNDTRIP=1`` the parametrization also includes the full
package trees (and then checks that the rewritten packages still import).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from loop2scan.api import Options, RunReport, run

FULL = os.environ.get("LOOP2SCAN_FULL_ROUNDTRIP") == "1"
PACKAGES = ("jax", "flax")
TEMP_SUFFIX = ".loop2scan.tmp"

# Files (relative to site-packages) in which loop2scan rewrote at least one
# loop for jax 0.10.x / flax 0.12.x.  Files missing from the installed
# versions are simply left out of the subset.
KNOWN_REWRITES = (
    "jax/_src/lax/special.py",
    "jax/_src/numpy/polynomial.py",
    "jax/_src/numpy/ufuncs.py",
    "jax/_src/pallas/fuser/block_spec.py",
    "jax/_src/pallas/utils.py",
    "jax/_src/scipy/spatial/transform.py",
    "jax/_src/third_party/scipy/interpolate.py",
    "jax/experimental/pallas/ops/gpu/ragged_dot_mgpu.py",
    "jax/experimental/rnn.py",
    "jax/experimental/sparse/linalg.py",
    "flax/core/nn/attention.py",
    "flax/linen/attention.py",
    "flax/linen/normalization.py",
    "flax/nnx/nn/attention.py",
    "flax/nnx/nn/normalization.py",
)

# How many files of each package the subset adds: the most loop-dense ones
# (they exercise the analysis and its declines) and a hash-chosen sample.
LOOP_DENSE = {"jax": 8, "flax": 4}
SAMPLE = {"jax": 45, "flax": 15}


def package_dir(name: str) -> Path:
    """The installed package directory, found without importing the package."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is not installed"
    return Path(spec.origin).resolve().parent


def site_dir() -> Path:
    parents = {package_dir(name).parent for name in PACKAGES}
    assert len(parents) == 1, "jax and flax are expected side by side"
    return parents.pop()


def python_files(name: str) -> list[str]:
    """POSIX paths, relative to site-packages, of every ``.py`` file of the package."""
    root = package_dir(name)
    base = root.parent
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                found.append(Path(dirpath, filename).relative_to(base).as_posix())
    return found


_FOR_LINE = re.compile(rb"^[ \t]*(?:async[ \t]+)?for[ \t(]", re.M)


def _loop_count(path: Path) -> int:
    """Lines starting a ``for`` statement (a cheap, deterministic measure of loop density)."""
    return len(_FOR_LINE.findall(path.read_bytes()))


def _stable_key(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=None)
def subset() -> tuple[str, ...]:
    """The deterministic fast subset (relative paths, sorted)."""
    base = site_dir()
    chosen: set[str] = {rel for rel in KNOWN_REWRITES if (base / rel).is_file()}
    for name in PACKAGES:
        files = python_files(name)
        dense = sorted(files, key=lambda rel: (-_loop_count(base / rel), rel))
        chosen.update(rel for rel in dense[: LOOP_DENSE[name]])
        rest = sorted((rel for rel in files if rel not in chosen), key=_stable_key)
        chosen.update(rest[: SAMPLE[name]])
    return tuple(sorted(chosen))


def copy_tree(kind: str, dest: Path) -> list[Path]:
    """Copy the files of ``kind`` ('subset' or 'full') under ``dest``; return the package roots."""
    base = site_dir()
    if kind == "full":
        for name in PACKAGES:
            shutil.copytree(base / name, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
    else:
        for rel in subset():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / rel, target)
    return [dest / name for name in PACKAGES]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative POSIX path -> bytes)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            if path.is_symlink():
                continue
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def rel_report_paths(report: RunReport, root: Path, predicate) -> set[str]:
    return {Path(os.path.abspath(f.path)).relative_to(root).as_posix() for f in report.files if predicate(f)}


TREES = ["subset"] + (["full"] if FULL else [])


def test_subset_is_deterministic_and_covers_the_known_rewrites():
    first = subset()
    subset.cache_clear()
    assert subset() == first
    base = site_dir()
    present = [rel for rel in KNOWN_REWRITES if (base / rel).is_file()]
    assert present, "none of the files known to be rewritten exists in the installed packages"
    assert set(present) <= set(first)
    assert 60 <= len(first) <= 100, len(first)
    assert {rel.split("/")[0] for rel in first} == set(PACKAGES)


@pytest.mark.parametrize("tree", TREES)
def test_write_round_trip_on_installed_sources(tree, tmp_path):
    root = tmp_path / "site"
    roots = copy_tree(tree, root)
    before = snapshot(root)
    py_files = sorted(rel for rel in before if rel.endswith(".py"))
    assert py_files

    report = run([str(r) for r in roots], Options(write=True, include_tests=True))

    # No crash: every file processed, no emitter failure.
    assert [(f.path, f.error) for f in report.errors] == []
    assert len(report.files) == len(py_files)
    internal = [(f.path, loop.line, loop.message) for f in report.files for loop in f.loops
                if loop.code == "L2S901"]
    assert internal == []
    assert report.exit_code == 0

    after = snapshot(root)
    assert sorted(after) == sorted(before), "files were added or removed"
    changed = {rel for rel in before if after[rel] != before[rel]}
    written = rel_report_paths(report, root, lambda f: f.written)
    reported_changed = rel_report_paths(report, root, lambda f: f.changed)
    assert changed == written == reported_changed
    # The subset must exercise real rewrites, or the round trip proves nothing.
    assert changed, "no file was rewritten"
    assert all(rel.endswith(".py") for rel in changed)

    # Every rewritten file parses and compiles (bytes: the coding declaration applies).
    for rel in sorted(changed):
        raw = after[rel]
        ast.parse(raw, filename=rel)
        compile(raw, rel, "exec", dont_inherit=True)
        assert b"lax.scan(" in raw, rel

    # Every file without a rewrite is byte-identical (checked above as `changed`
    # == the written files); make the comparison explicit for the others.
    for rel in before:
        if rel not in changed:
            assert after[rel] == before[rel], rel

    assert not [rel for rel in after if rel.endswith(TEMP_SUFFIX)]

    # A second --write finds nothing to do and changes no byte.
    again = run([str(r) for r in roots], Options(write=True, include_tests=True))
    assert [(f.path, f.error) for f in again.errors] == []
    assert [f.path for f in again.files if f.changed] == []
    assert again.count("rewritten") == 0
    assert again.exit_code == 0
    assert snapshot(root) == after

    if tree == "full":
        # The inserted imports must not break the packages (e.g. circular imports).
        code = "import jax, jax.numpy, flax, flax.linen, flax.nnx; print(jax.__file__)"
        env = dict(os.environ, PYTHONPATH=str(root))
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert Path(proc.stdout.strip()).resolve() == (root / "jax" / "__init__.py").resolve()


def test_preview_of_the_subset_matches_what_write_does(tmp_path):
    """The preview (no --write) reports exactly the files --write changes, and changes nothing."""
    root = tmp_path / "site"
    roots = copy_tree("subset", root)
    before = snapshot(root)
    preview = run([str(r) for r in roots], Options(write=False, jobs=1, include_tests=True))
    assert snapshot(root) == before
    assert [(f.path, f.error) for f in preview.errors] == []
    previewed = {rel: f.new_text for f in preview.files if f.changed
                 for rel in [Path(os.path.abspath(f.path)).relative_to(root).as_posix()]}
    assert previewed
    run([str(r) for r in roots], Options(write=True, include_tests=True))
    after = snapshot(root)
    changed = {rel for rel in before if after[rel] != before[rel]}
    assert changed == set(previewed)
    for rel, text in previewed.items():
        encoding, _ = tokenize.detect_encoding(io.BytesIO(after[rel]).readline)
        assert after[rel].decode(encoding) == text, rel


# ----------------------------------------------------------------------------- rewrites of real loops
#
# Minimal reproductions of loops of the installed jax / flax sources that
# loop2scan rewrites.  A rewrite must compute what the loop computes (same
# values, shapes and dtypes); declining the loop is equally correct.

REAL_LOOPS = {
    # jax/_src/numpy/polynomial.py, jnp.poly: the carry grows by one element per step.
    "polynomial-poly-growing-carry": ('''
import jax.numpy as jnp


def poly(zeros):
    dt = zeros.dtype
    a = jnp.ones((1,), dtype=dt)
    for k in range(len(zeros)):
        a = jnp.convolve(a, jnp.array([1, -zeros[k]], dtype=dt), mode="full")
    return a
''', "poly", lambda jnp, np: (jnp.array([1.0, 2.0, 3.0], jnp.float32),)),
    # jax/_src/third_party/scipy/interpolate.py, RegularGridInterpolator._evaluate_linear:
    # the carry starts as a scalar and becomes a vector.
    "interpolate-scalar-carry-broadcasts": ('''
import jax.numpy as jnp


def weight_of(edge_indices, indices, norm_distances):
    weight = jnp.asarray(1.0)
    for ei, i, yi in zip(edge_indices, indices, norm_distances):
        weight *= jnp.where(ei == i, 1 - yi, yi)
    return weight
''', "weight_of", lambda jnp, np: (
        (jnp.array([0, 1, 2]), jnp.array([2, 1, 1])),
        [jnp.array([0, 1, 2]), jnp.array([1, 0, 1])],
        [jnp.array([0.1, 0.5, 0.9], jnp.float32), jnp.array([0.2, 0.3, 0.4], jnp.float32)],
    )),
    # jax/experimental/rnn.py, lstm_ref: per-layer weights in a dict, the first
    # layer's input width differs from the others (and so does the carry).
    "rnn-per-layer-dict-of-different-shapes": ('''
import jax.numpy as jnp


def stacked(x, W_ih: dict, h_0, num_layers: int):
    y = x
    final_h = []
    for l in range(num_layers):
        h = jnp.tanh(y @ W_ih[l] + h_0[l])
        y = h
        final_h.append(h)
    return y, jnp.stack(final_h)
''', "stacked", lambda jnp, np: (
        jnp.asarray(np.linspace(-1, 1, 15).reshape(5, 3), jnp.float32),
        {0: jnp.asarray(np.linspace(-1, 1, 12).reshape(3, 4), jnp.float32),
         1: jnp.asarray(np.linspace(1, -1, 16).reshape(4, 4), jnp.float32)},
        jnp.zeros((2, 4), jnp.float32),
        2,
    )),
    # jax/_src/pallas/utils.py, _erf_inv_64_lowering_helper: the index goes to a
    # local helper that uses it as a Python list index and in an `if`.
    "pallas-utils-index-used-by-local-helper": ('''
import jax.numpy as jnp


def horner(w):
    lo = [0.5, -0.25, 0.125, 0.0625]
    hi = [1.5, 0.75, -0.375, 0.1875]

    def get_coefficient(i):
        c = lo[i]
        if i < 2:
            c = jnp.where(w < 1.0, c, hi[i])
        return c

    p = get_coefficient(0)
    for i in range(1, 4):
        p = jnp.where(w < 4.0, get_coefficient(i) + p * w, p)
    return p
''', "horner", lambda jnp, np: (jnp.linspace(0.0, 5.0, 6, dtype=jnp.float32),)),
    # jax/_src/pallas/utils.py, _erf_inv_32_lowering_helper: Python float
    # constants are weakly typed; an array made of them is not.
    "pallas-utils-python-float-constants": ('''
import jax.numpy as jnp


def horner_const(w):
    lo = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, 0.246640727, 1.50140941]
    hi = [-0.000200214257, 0.000100950558, 0.00134934322, 1.00167406, 2.83297682]
    p = jnp.where(w < 5.0, lo[0], hi[0])
    for i in range(1, 5):
        c = jnp.where(w < 5.0, lo[i], hi[i])
        p = c + p * w
    return p
''', "horner_const", lambda jnp, np: (jnp.linspace(0.0, 8.0, 5).astype(jnp.bfloat16),)),
    # flax/linen/attention.py and flax/nnx/nn/attention.py, combine_masks (and
    # the mask_components loop of flax/core/nn/attention.py): masks broadcast.
    "flax-combine-masks-broadcasting": ('''
import jax.numpy as jnp


def combine_masks(*masks):
    masks_list = [m for m in masks if m is not None]
    mask, *other_masks = masks_list
    for other_mask in other_masks:
        mask = jnp.logical_and(mask, other_mask)
    return mask.astype(jnp.float32)
''', "combine_masks", lambda jnp, np: (
        jnp.tril(jnp.ones((1, 1, 3, 3), bool)),
        jnp.asarray(np.arange(18).reshape(2, 1, 3, 3) % 3 != 0),
    )),
}


def _exec(src: str, name: str):
    namespace: dict = {"__name__": f"_l2s_real_loop_{name}"}
    exec(compile(src, f"<{name}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("case", sorted(REAL_LOOPS))
def test_rewrites_of_real_loops_compute_the_same(case):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from loop2scan import rewrite_source

    src, fn, make_args = REAL_LOOPS[case]
    result = rewrite_source(src, "jax")
    assert result.error is None, result.error
    assert len(result.loops) == 1
    if result.new_text is None:
        return  # declined: the loop is left as it is, which is correct
    args = make_args(jnp, np)
    want = _exec(src, case)[fn](*args)
    try:
        got = _exec(result.new_text, case)[fn](*args)
    except Exception as e:  # noqa: BLE001 - the original runs, so the rewrite must too
        pytest.fail(f"the rewritten loop fails where the original runs: {type(e).__name__}: "
                    f"{str(e).splitlines()[0]}\n{result.new_text}")
    want_leaves, want_tree = jax.tree.flatten(want)
    got_leaves, got_tree = jax.tree.flatten(got)
    assert got_tree == want_tree
    for w, g in zip(want_leaves, got_leaves):
        assert (jnp.shape(g), jnp.asarray(g).dtype) == (jnp.shape(w), jnp.asarray(w).dtype), result.new_text
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=1e-6, atol=1e-6)
