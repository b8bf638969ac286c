"""Flax NNX audit: rewrite NNX code from PyPI with ``--framework flax`` and execute every rewrite.

For each package of ``PACKAGES`` (pinned versions; the ``flax`` sdist stands
for its ``examples/`` and ``tests/`` directories that use ``flax.nnx``):

1. **Environment.**  A separate virtual environment (``build/nnx-audit-venv``,
   created on first use) gets ``BASE_PINS`` (jax, jaxlib, flax, numpy, libcst,
   click, pytest), then each package with those pins as constraints; a package
   whose dependencies do not resolve under the pins is installed with
   ``--no-deps`` and recorded so, and each package's top-level modules are
   imported (the error is recorded when one does not import).  loop2scan is
   installed there in editable mode without dependencies.
2. **Source.**  The installed files of each distribution (its ``RECORD``) are
   copied to ``build/nnx-audit/<dist>/original``; for ``flax``, the sdist
   (``pip download --no-deps --no-binary :all:``) gives every top-level
   directory of ``examples/`` and ``tests/`` holding a file that imports
   ``flax.nnx``, and the files directly under ``tests/`` that do.  loop2scan
   (a snapshot of this working tree's ``loop2scan/`` and ``codemods/`` taken at
   the start of the run, so that every step uses the same tool) previews
   ``rewrite --framework flax --include-tests --format json`` there, once with
   the default options and once with ``--min-trip-count 0``; loops are counted
   by status and code.  A copy (``build/nnx-audit/<dist>/rewritten``) is
   rewritten with ``--write``; a second ``--write`` must change no file (fixed
   point).
3. **Execute.**  Each rewritten loop is matched, by the class holding the
   method that holds it (or else the outermost function holding it), with an
   entry of ``SPOT_CHECKS``.  A worker process (this script with ``--worker``,
   in the audit environment) imports the original module and loads the
   rewritten file beside it in the same package, builds the model from both
   with the same constructor arguments and ``nnx.Rngs(0)``, copies the
   original's whole state into the rewritten model
   (``loop2scan.check.flax_backend.copy_into``) and compares the outputs of the
   method holding the loop, on random inputs whose sizes all differ, and the
   gradients of a random projection of the outputs with respect to every
   ``nnx.Param`` (in the stacked layout); in eval mode, and in train mode too
   where the model has dropout.  For plain functions, outputs and gradients
   with respect to the floating-point inputs are compared.  Verdict per
   rewrite: ``equal``, ``different``, ``crashed`` (the rewrite raises where
   the original runs) or ``not-executable`` (with the reason).  Where the
   package ships tests exercising the rewritten code (``SPOT_CHECKS[...]
   ["tests"]``), they run with pytest on both copies.

Results: ``benchmarks/results/nnx_audit.json`` and ``nnx_audit.md`` (paths
relative to each package's root; no local path is written).  Exit status 1
when a rewrite is ``different`` or ``crashed``, a test passes on the original
copy and fails on the rewritten one, or the second ``--write`` changes a file.

    .venv/bin/python benchmarks/nnx_audit.py                    # everything
    .venv/bin/python benchmarks/nnx_audit.py --packages flax,jraphx
    .venv/bin/python benchmarks/nnx_audit.py --skip-install     # reuse the environment as it is

Duration on 2 cores: about 90 seconds once the environment exists (the three
loop2scan passes over every package, four spot checks, one upstream test file
run twice); creating the environment first adds about 10 minutes
(google-tunix pulls in transformers, datasets and grain).
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_ROOT, RESULTS_DIR, log, machine_info, machine_line, now_iso, redact  # noqa: E402
from real_audit import last_error_line, run_cmd  # noqa: E402

BUILD_DIR = os.path.join(REPO_ROOT, "build")
VENV = os.path.join(BUILD_DIR, "nnx-audit-venv")
SCRATCH = os.path.join(BUILD_DIR, "nnx-audit")
CACHE = os.path.join(BUILD_DIR, "nnx-audit-cache")
TOOL_SNAPSHOT = os.path.join(BUILD_DIR, "nnx-audit-tool")
RESULT_NAME = "nnx_audit"

# The interpreter of the repository's environment pins these; every package installs under them.
BASE_PINS = ("jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "numpy==2.4.6", "libcst==1.9.0", "click==8.5.1",
             "pytest==9.2.0")


@dataclass(frozen=True)
class Package:
    """A distribution to audit: PyPI name, pinned version, top-level modules, where its source comes from."""

    dist: str
    version: str
    tops: tuple[str, ...]
    source: str = "wheel"  # "wheel": the installed files; "sdist": examples/ and tests/ of the sdist
    note: str = ""


PACKAGES = (
    Package("flax", "0.12.8", ("flax",), source="sdist",
            note="sdist examples/ and tests/ directories using flax.nnx"),
    Package("google-tunix", "0.1.7", ("tunix",)),
    Package("flaxdiff", "0.2.11", ("flaxdiff",)),
    Package("jax-bonsai", "0.0.1", ("jax_bonsai",), note="the 0.0.1 wheel holds only an empty `jax_bonsai/__init__.py`"),
    Package("qwix", "0.1.8", ("qwix",)),
    Package("mamba2-jax", "1.1.2", ("mamba2_jax",)),
    Package("jimmy-vision", "0.0.7", ("jimmy",)),
    Package("nnx-ppo", "0.3.0", ("nnx_ppo",)),
    Package("jraphx", "0.1.0", ("jraphx",)),
)

# Where the flax sdist's NNX code lives (only what imports flax.nnx is kept, see flax_sources).
FLAX_SDIST_DIRS = ("examples", "tests")
NNX_IMPORT = re.compile(r"^\s*(from\s+flax\s+import\s+[^\n]*\bnnx\b|from\s+flax\.nnx\b|import\s+flax\.nnx\b)",
                        re.M)

# --------------------------------------------------------------------------- spot checks
#
# Key: "<dist>:<file relative to the package root>:<holder>", the holder being the
# class holding the method that holds the loop (dotted through enclosing
# functions and classes), or else the outermost function holding it.
#   module:  dotted module name (package context for the rewritten copy); None: load the file on its own
#   kind:    "nnx" (a model class) or "function"
#   build:   expression, with `C` the class (from the original or the rewritten module), `mod` the module,
#            `nnx`, `jax`, `jnp`: the model (always seeded with nnx.Rngs(0))
#   method:  the method holding the loop
#   cases:   {name: expression giving (args, kwargs) from `key` (a PRNG key), `jax`, `jnp`, `np`, `mod`}
#   covers:  {line of the rewritten loop: [case names]}; default every case
#   dropout: the model has dropout: compare in train mode too
#   tests:   pytest arguments (relative to the package root) run on both copies
SPOT_CHECKS: dict[str, dict] = {
    "flax:tests/nnx/integration_test.py:TestIntegration.test_replace_by_pure_dict.MLPs": dict(
        module=None,
        kind="nnx",
        build="C(4, rngs=nnx.Rngs(0))",
        method="__call__",
        cases={"x(2,3,4)": "((jax.random.normal(key, (2, 3, 4)),), {})"},
        tests=["tests/nnx/integration_test.py"],
    ),
    "google-tunix:tunix/tests/test_common.py:ToyTransformer": dict(
        module="tunix.tests.test_common",
        kind="nnx",
        build="C(mod.ModelConfig(num_layers=3), rngs=nnx.Rngs(0))",
        method="__call__",
        cases={
            "tokens(2,5)": "((jax.random.randint(key, (2, 5), 0, 256), jnp.broadcast_to(jnp.arange(5), (2, 5))), {})",
            "tokens(2,5)+hidden": "((jax.random.randint(key, (2, 5), 0, 256), jnp.broadcast_to(jnp.arange(5), (2, 5))),"
                                  " {'output_hidden_states': True})",
        },
        tests=[],  # the wheel ships the helper but not the tests using it
        tests_note="the wheel ships tunix/tests/test_common.py but none of the *_test.py files using it",
    ),
    "jraphx:jraphx/utils/scatter.py:scatter_fallback": dict(
        module="jraphx.utils.scatter",
        kind="function",
        function="scatter_fallback",
        cases={
            "add src(5,3) index(5,) dim_size 4": "((jax.random.normal(key, (5, 3)), jnp.array([0, 2, 2, 3, 0])),"
                                                 " {'dim_size': 4, 'dim': 0, 'reduce': 'add'})",
            "add src(5,) inferred dim_size": "((jax.random.normal(key, (5,)), jnp.array([1, 0, 1, 3, 3])),"
                                             " {'dim': 0, 'reduce': 'sum'})",
            "mean src(5,3) index(5,) dim_size 4": "((jax.random.normal(key, (5, 3)), jnp.array([0, 2, 2, 3, 0])),"
                                                  " {'dim_size': 4, 'dim': 0, 'reduce': 'mean'})",
            "mean src(6,2) default dim": "((jax.random.normal(key, (6, 2)), jnp.array([3, 1, 1, 0, 4, 3])),"
                                         " {'dim_size': 5, 'reduce': 'mean'})",
        },
        covers={669: ["add src(5,3) index(5,) dim_size 4", "add src(5,) inferred dim_size"],
                674: ["mean src(5,3) index(5,) dim_size 4", "mean src(6,2) default dim"]},
        tests=[],
        tests_note="the wheel ships no tests",
    ),
}

RTOL, ATOL = 1e-5, 1e-5  # float32 outputs
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5


# --------------------------------------------------------------------------- small helpers

def vpy() -> str:
    return os.path.join(VENV, "bin", "python")


def scrub(text: str, roots: dict[str, str]) -> str:
    """``text`` with the copies' roots named by placeholders, then the usual redaction."""
    for root, name in sorted(roots.items(), key=lambda r: -len(r[0])):
        text = text.replace(root + os.sep, "").replace(root, name)
    return redact(text)


def tree_hash(root: str) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def py_hashes(root: str) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


# --------------------------------------------------------------------------- environment

def installed_versions() -> dict[str, str]:
    code, out, _, _ = run_cmd([vpy(), "-c", "import json; from importlib import metadata as m; "
                                            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): "
                                            "d.version for d in m.distributions()}))"], timeout=120)
    return json.loads(out) if code == 0 else {}


def ensure_env(packages: list[Package], skip_install: bool) -> dict[str, dict]:
    """Create the environment and install what is missing; per package: how it installed and imports."""
    constraints = os.path.join(BUILD_DIR, "nnx-audit-constraints.txt")
    os.makedirs(BUILD_DIR, exist_ok=True)
    with open(constraints, "w", encoding="utf-8") as f:
        f.write("\n".join(p for p in BASE_PINS if p.split("==")[0] in ("jax", "jaxlib", "flax", "numpy")) + "\n")
    if not os.path.exists(vpy()):
        if skip_install:
            raise SystemExit(f"no environment at build/{os.path.basename(VENV)}; run without --skip-install")
        log("creating the audit environment")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        run_cmd([vpy(), "-m", "pip", "install", "-q", "--upgrade", "pip"], timeout=600)
    have = installed_versions()
    pip = [vpy(), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    missing = [p for p in BASE_PINS if have.get(p.split("==")[0]) != p.split("==")[1]]
    if missing and not skip_install:
        log(f"installing {' '.join(missing)}")
        code, out, err, _ = run_cmd(pip + list(BASE_PINS), timeout=1800)
        if code != 0:
            raise SystemExit(f"the base pins do not install: {last_error_line(err or out)}")
    if "loop2scan" not in have and not skip_install:
        run_cmd(pip + ["--no-deps", "-e", REPO_ROOT], timeout=600)
    info: dict[str, dict] = {}
    have = installed_versions()
    for p in packages:
        rec: dict[str, Any] = {"install": "ok", "install_note": None}
        if p.source == "sdist":
            rec["install"] = "pinned base (source from the sdist)"
        elif have.get(p.dist) != p.version:
            if skip_install:
                rec.update(install="missing", install_note="not installed and --skip-install given")
            else:
                log(f"installing {p.dist}=={p.version}")
                code, out, err, _ = run_cmd(pip + ["-c", constraints, f"{p.dist}=={p.version}"], timeout=1800)
                if code != 0:
                    note = last_error_line(err or out)
                    code, out, err, _ = run_cmd(pip + ["--no-deps", f"{p.dist}=={p.version}"], timeout=900)
                    rec.update(install="no-deps" if code == 0 else "failed",
                               install_note=f"with the pins as constraints: {note}" if code == 0 else
                               last_error_line(err or out))
        else:
            rec["install_note"] = "already installed"
        imports = {}
        for top in p.tops:
            code, out, err, _ = run_cmd([vpy(), "-c", f"import {top}"], timeout=600)
            imports[top] = "ok" if code == 0 else last_error_line(err or out)
        rec["imports"] = imports
        info[p.dist] = rec
    return info


def snapshot_tool() -> dict:
    """Copy the working tree's loop2scan/ and codemods/ (the tool under test) so every step uses the same code."""
    shutil.rmtree(TOOL_SNAPSHOT, ignore_errors=True)
    for pkg in ("loop2scan", "codemods"):
        src = os.path.join(REPO_ROOT, pkg)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(TOOL_SNAPSHOT, pkg), ignore=shutil.ignore_patterns("__pycache__"))
    src_info = machine_info()["loop2scan_source"]
    return {"commit": src_info.get("commit"), "local_changes": src_info.get("local_changes"),
            "sources_sha256_16": tree_hash(TOOL_SNAPSHOT)}


def tool_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = TOOL_SNAPSHOT
    env.setdefault("PYTHONHASHSEED", "0")
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("VIRTUAL_ENV", None)
    return env


def loop2scan(args: list[str], cwd: str, timeout: float = 1800) -> tuple[Optional[dict], str, float]:
    code, out, err, secs = run_cmd([vpy(), "-m", "loop2scan", "rewrite", *args], cwd=cwd, env=tool_env(),
                                   timeout=timeout)
    try:
        return json.loads(out), err, secs
    except json.JSONDecodeError:
        return None, f"exit {code}: {last_error_line(err or out)}", secs


# --------------------------------------------------------------------------- sources

def site_packages() -> str:
    code, out, _, _ = run_cmd([vpy(), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return out.strip()


def wheel_sources(p: Package, dest: str) -> int:
    """Copy the installed files of ``p`` (its RECORD) under its top-level modules into ``dest``."""
    code, out, err, _ = run_cmd([vpy(), "-c", "import json, sys; from importlib import metadata as m; "
                                            f"print(json.dumps([str(f) for f in (m.files({p.dist!r}) or [])]))"])
    if code != 0:
        raise RuntimeError(last_error_line(err))
    base = site_packages()
    n = 0
    for rel in json.loads(out):
        parts = rel.split("/")
        top = parts[0][:-3] if parts[0].endswith(".py") else parts[0]
        if top not in p.tops or "__pycache__" in parts or rel.endswith(".pyc"):
            continue
        src = os.path.join(base, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))
            n += 1
    return n


def flax_sources(p: Package, dest: str) -> int:
    """The flax sdist's NNX code: each top-level directory of examples/ and tests/ holding a file that imports
    flax.nnx, whole, and the files directly under them that import it."""
    os.makedirs(CACHE, exist_ok=True)
    archive = os.path.join(CACHE, f"flax-{p.version}.tar.gz")
    if not os.path.exists(archive):
        code, out, err, _ = run_cmd([vpy(), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                                     f"flax=={p.version}", "-d", CACHE], timeout=900)
        if code != 0 or not os.path.exists(archive):
            raise RuntimeError(f"pip download: {last_error_line(err or out)}")
    unpacked = os.path.join(CACHE, f"flax-{p.version}")
    if not os.path.isdir(unpacked):
        with tarfile.open(archive) as tf:
            tf.extractall(CACHE, filter="data")
    n = 0
    for top in FLAX_SDIST_DIRS:
        top_dir = os.path.join(unpacked, top)
        for entry in sorted(os.listdir(top_dir)):
            path = os.path.join(top_dir, entry)
            if os.path.isdir(path):
                uses = any(NNX_IMPORT.search(open(os.path.join(d, f), encoding="utf-8", errors="replace").read())
                           for d, _, fs in os.walk(path) for f in fs if f.endswith(".py"))
                if uses:
                    shutil.copytree(path, os.path.join(dest, top, entry),
                                    ignore=shutil.ignore_patterns("__pycache__"))
                    n += sum(len(fs) for _, _, fs in os.walk(os.path.join(dest, top, entry)))
            elif entry.endswith(".py") and NNX_IMPORT.search(open(path, encoding="utf-8", errors="replace").read()):
                os.makedirs(os.path.join(dest, top), exist_ok=True)
                shutil.copy2(path, os.path.join(dest, top, entry))
                n += 1
    return n


def top_names(root: str) -> list[str]:
    return sorted(e for e in os.listdir(root) if not e.startswith("."))


# --------------------------------------------------------------------------- loops

def holder_of(source: str, line: int) -> tuple[str, str]:
    """(qualname of the class holding the method holding the loop at ``line``, or else of the outermost
    function holding it; qualname of the innermost def)."""
    tree = ast.parse(source)
    chain: list[ast.AST] = []

    def visit(node: ast.AST, path: list[ast.AST]) -> None:
        nonlocal chain
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.lineno <= line <= (child.end_lineno or child.lineno):
                    chain = path + [child]
                    visit(child, path + [child])
                    return
            elif hasattr(child, "lineno") and child.lineno <= line <= (getattr(child, "end_lineno", 0) or 0):
                visit(child, path)
                return

    visit(tree, [])
    names = [n.name for n in chain]
    innermost_def = ".".join(names)
    classes = [i for i, n in enumerate(chain) if isinstance(n, ast.ClassDef)]
    if classes and classes[-1] < len(chain) - 1:  # the loop is in a method of the innermost class
        return ".".join(names[:classes[-1] + 1]), innermost_def
    if classes and classes[-1] == len(chain) - 1:
        return ".".join(names), innermost_def
    return (names[0] if names else "<module>"), innermost_def


def count_report(report: Optional[dict]) -> dict:
    if report is None:
        return {"files": None, "loops": None, "by_status": {}, "by_code": {}, "rewrites": None, "errors": []}
    by_status: collections.Counter = collections.Counter()
    by_code: collections.Counter = collections.Counter()
    errors = []
    for f in report["files"]:
        if f.get("error"):
            errors.append({"file": f["path"], "error": f["error"][:300]})
        for lp in f["loops"]:
            by_status[lp["status"]] += 1
            by_code[lp["code"]] += 1
    return {"files": len(report["files"]), "loops": sum(by_status.values()), "by_status": dict(sorted(by_status.items())),
            "by_code": dict(sorted(by_code.items())), "rewrites": by_status.get("rewritten", 0), "errors": errors}


# --------------------------------------------------------------------------- the worker (audit environment)

def _worker(spec_path: str) -> None:
    """Run one spot check: compare the original and the rewritten code (this process runs in the audit venv)."""
    with open(spec_path, encoding="utf-8") as f:
        job = json.load(f)
    out_path = job["out"]
    result: dict[str, Any] = {"cases": {}}
    try:
        result.update(_worker_run(job))
    except Exception as e:  # noqa: BLE001 - the reason is the result
        import traceback
        result.update(verdict="not-executable", reason=f"setup failed: {type(e).__name__}: {str(e)[:300]}",
                      traceback=traceback.format_exc()[-2000:])
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)


def _load(job: dict, which: str):
    root = job[which]
    rel = job["file"]
    path = os.path.join(root, rel)
    module = job.get("module")
    if which == "original_root":
        if module:
            sys.path.insert(0, root)
            return importlib.import_module(module)
        name = "l2s_original_" + re.sub(r"\W", "_", rel[:-3])
    else:
        parent = module.rpartition(".")[0] if module else ""
        stem = os.path.basename(rel)[:-3] + "__l2s_rewritten"
        name = f"{parent}.{stem}" if parent else "l2s_rewritten_" + re.sub(r"\W", "_", rel[:-3])
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _resolve(mod, path: str, file: str):
    """``mod``'s object at the dotted ``path``; a class defined inside a function is rebuilt from its source in
    the module's namespace."""
    obj = mod
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj
    except AttributeError:
        pass
    source = open(file, encoding="utf-8").read()
    node: Any = ast.parse(source)
    for part in path.split("."):
        node = next(n for n in ast.walk(node) if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part)
    segment = ast.get_source_segment(source, node, padded=False)
    ns = dict(vars(mod))
    exec(compile(textwrap.dedent(segment), file, "exec"), ns)  # noqa: S102 - the audited class itself
    return ns[path.split(".")[-1]]


def _worker_run(job: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from loop2scan.check.flax_backend import copy_into, numeric, pure_state, stacked_like

    orig = _load(job, "original_root")
    rew = _load(job, "rewritten_root")
    files = {"orig": os.path.join(job["original_root"], job["file"]),
             "rew": os.path.join(job["rewritten_root"], job["file"])}
    ns = {"jax": jax, "jnp": jnp, "np": np, "nnx": nnx}

    def compare(a, b, rtol, atol) -> tuple[bool, float, str]:
        la, ta = jax.tree.flatten(numeric(a))
        lb, tb = jax.tree.flatten(numeric(b))
        if ta != tb:
            return False, float("inf"), f"structures differ: {str(ta)[:200]} vs {str(tb)[:200]}"
        worst, ok, note = 0.0, True, ""
        for x, y in zip(la, lb):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape:
                return False, float("inf"), f"shapes differ: {x.shape} vs {y.shape}"
            if x.size == 0:
                continue
            if np.issubdtype(x.dtype, np.inexact):
                worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
                if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                    ok, note = False, "values differ beyond tolerance"
            elif not np.array_equal(x, y):
                ok, note = False, "integer values differ"
                worst = max(worst, float(np.max(np.abs(x.astype(np.int64) - y.astype(np.int64)))))
        return ok, worst, note

    def floats(tree):
        return [o for o in jax.tree.leaves(tree) if isinstance(o, jax.Array) and jnp.issubdtype(o.dtype, jnp.inexact)]

    cases_out: dict[str, dict] = {}
    for ci, (case, expr) in enumerate(job["cases"].items()):
        key = jax.random.key(100 + ci)
        if job["kind"] == "nnx":
            C0 = _resolve(orig, job["holder"], files["orig"])
            C1 = _resolve(rew, job["holder"], files["rew"])
            m0 = eval(job["build"], dict(ns, C=C0, mod=orig))  # noqa: S307 - the check's own expression
            m1 = eval(job["build"], dict(ns, C=C1, mod=rew))  # noqa: S307
            args, kwargs = eval(expr, dict(ns, key=key, mod=orig))  # noqa: S307
            for mode in (["eval", "train"] if job.get("dropout") else ["eval"]):
                label = f"{case} [{mode}]"
                rec: dict[str, Any] = {}
                cases_out[label] = rec
                for m in (m0, m1):
                    getattr(m, mode)()
                copy_into(m0, m1)
                method = job["method"]
                try:
                    out0 = jax.block_until_ready(getattr(m0, method)(*args, **kwargs))
                except Exception as e:  # noqa: BLE001
                    rec.update(verdict="not-executable", reason=f"the original raised {type(e).__name__}: "
                               f"{str(e)[:300]}")
                    continue
                try:
                    out1 = jax.block_until_ready(getattr(m1, method)(*args, **kwargs))
                except Exception as e:  # noqa: BLE001
                    rec.update(verdict="crashed", reason=f"{type(e).__name__}: {str(e)[:400]}")
                    continue
                ok, err, note = compare(out0, out1, job["rtol"], job["atol"])
                rec.update(output_ok=ok, output_max_abs=err, output_note=note)
                ok_s, err_s, note_s = compare(stacked_like(pure_state(m0), pure_state(m1)), pure_state(m1),
                                              job["rtol"], job["atol"])
                rec.update(state_ok=ok_s, state_max_abs=err_s, state_note=note_s)
                # gradients of one random projection of the outputs w.r.t. every nnx.Param
                probe = floats(out0)
                cot = [jax.random.normal(k, o.shape, o.dtype)
                       for k, o in zip(jax.random.split(jax.random.key(7), max(len(probe), 1)), probe)]

                def loss(model):
                    res = floats(getattr(model, method)(*args, **kwargs))
                    return sum(jnp.vdot(o, c) for o, c in zip(res, cot))

                copy_into(m0, m1)
                try:
                    g0 = nnx.to_pure_dict(nnx.grad(loss)(m0))
                    g1 = nnx.to_pure_dict(nnx.grad(loss)(m1))
                    ok_g, err_g, note_g = compare(stacked_like(g0, g1), g1, job["grad_rtol"], job["grad_atol"])
                    rec.update(grad_ok=ok_g, grad_max_abs=err_g, grad_note=note_g,
                               params=len(jax.tree.leaves(g1)))
                except Exception as e:  # noqa: BLE001
                    rec.update(grad_ok=False, grad_max_abs=None, grad_note=f"{type(e).__name__}: {str(e)[:300]}")
                rec["verdict"] = "equal" if ok and ok_s and rec["grad_ok"] else "different"
        else:
            f0 = _resolve(orig, job["function"], files["orig"])
            f1 = _resolve(rew, job["function"], files["rew"])
            args, kwargs = eval(expr, dict(ns, key=key, mod=orig))  # noqa: S307
            rec = {}
            cases_out[case] = rec
            try:
                out0 = jax.block_until_ready(f0(*args, **kwargs))
            except Exception as e:  # noqa: BLE001
                rec.update(verdict="not-executable", reason=f"the original raised {type(e).__name__}: {str(e)[:300]}")
                continue
            try:
                out1 = jax.block_until_ready(f1(*args, **kwargs))
            except Exception as e:  # noqa: BLE001
                rec.update(verdict="crashed", reason=f"{type(e).__name__}: {str(e)[:400]}")
                continue
            ok, err, note = compare(out0, out1, job["rtol"], job["atol"])
            rec.update(output_ok=ok, output_max_abs=err, output_note=note)
            leaves, treedef = jax.tree.flatten((args, kwargs))
            idx = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.inexact)]
            probe = floats(out0)
            cot = [jax.random.normal(k, o.shape, o.dtype)
                   for k, o in zip(jax.random.split(jax.random.key(7), max(len(probe), 1)), probe)]

            def floss(fn, vals):
                full = list(leaves)
                for i, v in zip(idx, vals):
                    full[i] = v
                a, k = jax.tree.unflatten(treedef, full)
                return sum(jnp.vdot(o, c) for o, c in zip(floats(fn(*a, **k)), cot))

            vals = [leaves[i] for i in idx]
            try:
                g0 = jax.grad(lambda v: floss(f0, v))(vals)
                g1 = jax.grad(lambda v: floss(f1, v))(vals)
                ok_g, err_g, note_g = compare(g0, g1, job["grad_rtol"], job["grad_atol"])
                rec.update(grad_ok=ok_g, grad_max_abs=err_g, grad_note=note_g)
            except Exception as e:  # noqa: BLE001
                rec.update(grad_ok=False, grad_max_abs=None, grad_note=f"{type(e).__name__}: {str(e)[:300]}")
            # under jax.jit too (the rewrite's scan traced with the rest)
            try:
                j1 = jax.block_until_ready(jax.jit(lambda *a: f1(*a, **kwargs))(*args))
                ok_j, err_j, _ = compare(out0, j1, job["rtol"], job["atol"])
                rec.update(jit_ok=ok_j, jit_max_abs=err_j)
            except Exception as e:  # noqa: BLE001
                j0_ok = True
                try:
                    jax.jit(lambda *a: f0(*a, **kwargs))(*args)
                except Exception:  # noqa: BLE001
                    j0_ok = False
                rec.update(jit_ok=not j0_ok, jit_note=f"{'' if j0_ok else 'original fails too: '}"
                           f"{type(e).__name__}: {str(e)[:200]}")
            rec["verdict"] = "equal" if ok and rec["grad_ok"] and rec.get("jit_ok", True) else "different"
    return {"cases": cases_out}


# --------------------------------------------------------------------------- the driver

def run_spot_check(p: Package, key: str, spec: dict, rewrite: dict, orig_root: str, rew_root: str,
                   work: str) -> dict:
    """Verdict for one rewritten loop (``rewrite``: its JSON entry, with ``file`` and ``holder``)."""
    cases = spec["cases"]
    covered = spec.get("covers", {}).get(rewrite["line"])
    if covered is not None:
        cases = {k: v for k, v in cases.items() if k in covered}
    job = dict(spec, cases=cases, file=rewrite["file"], holder=rewrite["holder"], original_root=orig_root,
               rewritten_root=rew_root, rtol=RTOL, atol=ATOL, grad_rtol=GRAD_RTOL, grad_atol=GRAD_ATOL,
               out=os.path.join(work, f"result-{rewrite['line']}.json"))
    job.pop("tests", None)
    job.pop("covers", None)
    os.makedirs(work, exist_ok=True)
    spec_path = os.path.join(work, f"job-{rewrite['line']}.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(job, f)
    code, out, err, secs = run_cmd([vpy(), os.path.abspath(__file__), "--worker", spec_path], cwd=work,
                                   env=tool_env(), timeout=900)
    if not os.path.exists(job["out"]):
        return {"verdict": "not-executable", "reason": f"the worker ended with exit {code}: "
                f"{last_error_line(err or out)}", "seconds": round(secs, 1)}
    with open(job["out"], encoding="utf-8") as f:
        res = json.load(f)
    res.pop("traceback", None)
    verdicts = [c.get("verdict") for c in res.get("cases", {}).values()]
    if res.get("verdict"):
        pass
    elif not verdicts:
        res.update(verdict="not-executable", reason="no case covers this loop")
    elif "crashed" in verdicts:
        res["verdict"] = "crashed"
    elif "different" in verdicts:
        res["verdict"] = "different"
    elif all(v == "equal" for v in verdicts):
        res["verdict"] = "equal"
    else:
        res.update(verdict="not-executable", reason="; ".join(sorted({c.get("reason", "") for c in
                                                                       res["cases"].values()})))
    errs = [c.get(k) for c in res.get("cases", {}).values() for k in ("output_max_abs", "grad_max_abs")
            if isinstance(c.get(k), (int, float))]
    res["max_abs_error"] = max(errs) if errs else None
    res["seconds"] = round(secs, 1)
    return res


def run_tests(args: list[str], orig_root: str, rew_root: str) -> dict:
    """pytest ``args`` on both copies: pass/fail counts and the tests failing only on the rewritten copy."""
    out: dict[str, Any] = {"args": args}
    per: dict[str, dict] = {}
    for label, root in (("original", orig_root), ("rewritten", rew_root)):
        env = tool_env()
        env["PYTHONPATH"] = root + os.pathsep + TOOL_SNAPSHOT
        code, so, se, secs = run_cmd([vpy(), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args],
                                     cwd=root, env=env, timeout=1800)
        text = so + se
        summary = next((ln for ln in reversed(text.splitlines()) if re.search(r"\d+ (passed|failed|error)", ln)),
                       last_error_line(text))
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
        failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)))
        per[label] = {"exit": code, "summary": summary.strip("= "), "counts": counts, "failed": failed,
                      "seconds": round(secs, 1)}
    out.update(per)
    out["failing_only_rewritten"] = sorted(set(per["rewritten"]["failed"]) - set(per["original"]["failed"]))
    return out


def audit_package(p: Package, env_info: dict, roots: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"dist": p.dist, "version": p.version, "source": p.source, "note": p.note or None, **env_info}
    base = os.path.join(SCRATCH, p.dist)
    orig_root, rew_root, work = (os.path.join(base, d) for d in ("original", "rewritten", "work"))
    roots.update({orig_root: "<original>", rew_root: "<rewritten>", work: "<work>"})
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(orig_root)
    try:
        n = flax_sources(p, orig_root) if p.source == "sdist" else wheel_sources(p, orig_root)
    except Exception as e:  # noqa: BLE001
        rec.update(status="no-source", reason=f"{type(e).__name__}: {e}")
        return rec
    rec["copied_files"] = n
    if not n or not top_names(orig_root):
        rec.update(status="no-source", reason="no file to copy")
        return rec
    shutil.copytree(orig_root, rew_root)
    targets = top_names(orig_root)
    common_args = ["--framework", "flax", "--include-tests", "--format", "json", "--no-diff", "-j", "2"]
    preview, err, secs = loop2scan([*targets, *common_args], orig_root)
    rec["preview"] = count_report(preview)
    rec["preview_seconds"] = round(secs, 1)
    if preview is None:
        rec.update(status="tool-failed", reason=err)
        return rec
    m0, err0, _ = loop2scan([*targets, *common_args, "--min-trip-count", "0"], orig_root)
    rec["min_trip_count_0"] = count_report(m0) if m0 is not None else {"error": err0}
    before = py_hashes(rew_root)
    w1, err1, _ = loop2scan([*targets, *common_args, "--write"], rew_root)
    after1 = py_hashes(rew_root)
    w2, err2, _ = loop2scan([*targets, *common_args, "--write"], rew_root)
    after2 = py_hashes(rew_root)
    rec["write"] = {"changed_files": sorted(k for k in after1 if before.get(k) != after1[k]),
                    "rewrites": count_report(w1)["rewrites"] if w1 else None, "error": None if w1 else err1}
    rec["fixed_point"] = {"changed_by_second_write": sorted(k for k in after2 if after1.get(k) != after2[k]),
                          "rewrites_reported_by_second_write": count_report(w2)["rewrites"] if w2 else None,
                          "error": None if w2 else err2}
    # every rewritten loop, with its holder and spot check
    rewrites, loops_m0 = [], {}
    if m0 is not None:
        loops_m0 = {(f["path"], lp["line"]): lp for f in m0["files"] for lp in f["loops"]}
    declines = []
    for f in preview["files"]:
        for lp in f["loops"]:
            if lp["status"] == "declined":
                declines.append({"file": f["path"], "line": lp["line"], "code": lp["code"], "message": lp["message"]})
            if lp["status"] != "rewritten":
                continue
            with open(os.path.join(orig_root, f["path"]), encoding="utf-8") as fh:
                holder, innermost = holder_of(fh.read(), lp["line"])
            rewrites.append({"file": f["path"], "line": lp["line"], "end_line": lp.get("end_line"),
                             "target": lp.get("target"), "message": lp["message"], "holder": holder,
                             "function": innermost, "check": f"{p.dist}:{f['path']}:{holder}"})
    extra_m0 = [{"file": path, "line": line, "message": lp["message"]} for (path, line), lp in sorted(loops_m0.items())
                if lp["status"] == "rewritten" and not any(r["file"] == path and r["line"] == line for r in rewrites)]
    rec["rewrites_only_with_min_trip_count_0"] = extra_m0
    rec["declines"] = declines
    tested: dict[str, dict] = {}
    for r in rewrites:
        spec = SPOT_CHECKS.get(r["check"])
        if spec is None:
            r.update(verdict="not-executable", reason="no spot check for this class or function")
            continue
        log(f"  executing {r['check']} (line {r['line']})")
        res = run_spot_check(p, r["check"], spec, r, orig_root, rew_root, os.path.join(work, r["check"].replace(
            "/", "_").replace(":", "__")))
        r.update(res)
        if spec.get("tests") and r["check"] not in tested:
            log(f"  pytest {' '.join(spec['tests'])} on both copies")
            tested[r["check"]] = run_tests(spec["tests"], orig_root, rew_root)
        r["tests"] = tested.get(r["check"]) or {"note": spec.get("tests_note", "no tests")}
    rec["rewrites"] = rewrites
    verdicts = collections.Counter(r["verdict"] for r in rewrites)
    rec["executed"] = sum(verdicts[v] for v in ("equal", "different", "crashed"))
    for v in ("equal", "different", "crashed", "not-executable"):
        rec[v.replace("-", "_")] = verdicts.get(v, 0)
    rec["upstream_failures"] = sorted({t for r in rewrites for t in (r.get("tests") or {}).get(
        "failing_only_rewritten", [])})
    rec["status"] = "audited"
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def summarize_declines(packages: list[dict]) -> list[dict]:
    by_code: dict[str, list] = collections.defaultdict(list)
    for rec in packages:
        for d in rec.get("declines", []):
            by_code[d["code"]].append(dict(d, dist=rec["dist"]))
    out = []
    for code, items in sorted(by_code.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        ex = items[0]
        out.append({"code": code, "count": len(items), "packages": sorted({i["dist"] for i in items}),
                    "example": {"dist": ex["dist"], "file": ex["file"], "line": ex["line"], "message": ex["message"]}})
    return out


def write_markdown(data: dict) -> str:
    L = ["# Flax NNX audit", "",
         f"{data['date']}. {machine_line(data['machine'])}.",
         f"Tool: working tree snapshot (sources sha256 {data['tool']['sources_sha256_16']}, commit "
         f"{(data['tool']['commit'] or '?')[:10]}{', with local changes' if data['tool']['local_changes'] else ''}). "
         f"`loop2scan rewrite --framework flax --include-tests`; every rewrite executed against the original "
         f"(outputs, model state, gradients w.r.t. every `nnx.Param`). Run: `.venv/bin/python benchmarks/nnx_audit.py` "
         f"({data['seconds']:.0f} s).", "",
         "| package | version | install | files | loops | rewrites | rewrites (--min-trip-count 0) | executed | equal "
         "| different | crashed | 2nd --write changed |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["packages"]:
        pv = r.get("preview") or {}
        m0 = r.get("min_trip_count_0") or {}
        inst = r.get("install", "?")
        bad_imports = [k for k, v in (r.get("imports") or {}).items() if v != "ok"]
        if bad_imports:
            inst += f"; import of {', '.join(bad_imports)} fails"
        fp = r.get("fixed_point", {}).get("changed_by_second_write")
        L.append(f"| {r['dist']} | {r['version']} | {inst} | {pv.get('files', '-')} | {pv.get('loops', '-')} | "
                 f"{pv.get('rewrites', '-')} | {m0.get('rewrites', m0.get('error', '-'))} | {r.get('executed', '-')} | "
                 f"{r.get('equal', '-')} | {r.get('different', '-')} | {r.get('crashed', '-')} | "
                 f"{len(fp) if fp is not None else '-'} |")
    t = data["totals"]
    L.append(f"| **total** | | | {t['files']} | {t['loops']} | {t['rewrites']} | {t['rewrites_min_trip_count_0']} | "
             f"{t['executed']} | {t['equal']} | {t['different']} | {t['crashed']} | {t['changed_by_second_write']} |")
    notes = []
    for r in data["packages"]:
        if r.get("status") != "audited":
            notes.append(f"- {r['dist']}: not audited ({r.get('status')}): {r.get('reason')}")
        if r.get("install") in ("no-deps", "failed", "missing"):
            notes.append(f"- {r['dist']}: install {r['install']}: {r.get('install_note')}")
        for top, why in (r.get("imports") or {}).items():
            if why != "ok":
                notes.append(f"- {r['dist']}: `import {top}` fails: {why}")
        if r.get("note") and r.get("source") != "sdist":
            notes.append(f"- {r['dist']}: {r['note']}")
    errs = [f"- {r['dist']}: `{e['file']}`: {e['error']}" for r in data["packages"]
            for part in ("preview", "min_trip_count_0") for e in (r.get(part) or {}).get("errors", [])]
    if notes or errs:
        L += ["", "Notes:"] + notes + [f"{e} (tool error)" for e in errs]
    L += ["", "## Rewrites", "",
          "| package | file:line | class / function | verdict | max abs error | tests on the rewritten copy |",
          "|---|---|---|---|---:|---|"]
    for r in data["packages"]:
        for w in r.get("rewrites", []):
            tests = w.get("tests") or {}
            if "rewritten" in tests:
                tt = (f"{tests['rewritten']['summary']} (original: {tests['original']['summary']})"
                      + (f"; failing only here: {', '.join(tests['failing_only_rewritten'])}"
                         if tests["failing_only_rewritten"] else ""))
            else:
                tt = tests.get("note", "")
            err = w.get("max_abs_error")
            verdict = w["verdict"] + (f" ({w['reason']})" if w.get("reason") else "")
            L.append(f"| {r['dist']} | `{w['file']}:{w['line']}` | `{w['holder']}` | {verdict} | "
                     f"{'-' if err is None else f'{err:.2e}'} | {tt} |")
        for w in r.get("rewrites_only_with_min_trip_count_0", []):
            L.append(f"| {r['dist']} | `{w['file']}:{w['line']}` | (only with --min-trip-count 0) | not executed | - | |")
    L += ["", "## Most common decline codes", "", "| code | loops | packages | example |", "|---|---:|---|---|"]
    for d in data["declines"][:12]:
        ex = d["example"]
        msg = ex["message"].replace("|", "\\|")
        L.append(f"| {d['code']} | {d['count']} | {', '.join(d['packages'])} | {ex['dist']} `{ex['file']}:{ex['line']}`: "
                 f"{msg} |")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", help="comma-separated distributions (default: all of PACKAGES)")
    ap.add_argument("--skip-install", action="store_true", help="use the audit environment as it is")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return 0
    wanted = [p for p in PACKAGES if not args.packages or p.dist in args.packages.split(",")]
    if args.packages and len(wanted) != len(args.packages.split(",")):
        ap.error(f"unknown package; known: {', '.join(p.dist for p in PACKAGES)}")
    t0 = time.perf_counter()
    tool = snapshot_tool()
    log(f"tool snapshot {tool['sources_sha256_16']}")
    env_info = ensure_env(wanted, args.skip_install)
    roots: dict[str, str] = {TOOL_SNAPSHOT: "<tool>", VENV: "<audit-venv>"}
    results = []
    for p in wanted:
        log(f"{p.dist}=={p.version}")
        rec = audit_package(p, env_info[p.dist], roots)
        results.append(rec)
    totals: dict[str, int] = collections.Counter()
    for r in results:
        pv = r.get("preview") or {}
        totals["files"] += pv.get("files") or 0
        totals["loops"] += pv.get("loops") or 0
        totals["rewrites"] += pv.get("rewrites") or 0
        totals["rewrites_min_trip_count_0"] += (r.get("min_trip_count_0") or {}).get("rewrites") or 0
        for k in ("executed", "equal", "different", "crashed", "not_executable"):
            totals[k] += r.get(k) or 0
        totals["changed_by_second_write"] += len((r.get("fixed_point") or {}).get("changed_by_second_write") or [])
        totals["upstream_failures"] += len(r.get("upstream_failures") or [])
    data = {"date": now_iso(), "machine": machine_info(), "tool": tool, "base_pins": list(BASE_PINS),
            "packages_pinned": [f"{p.dist}=={p.version}" for p in PACKAGES],
            "options": "rewrite --framework flax --include-tests (and --min-trip-count 0; --write twice)",
            "tolerances": {"rtol": RTOL, "atol": ATOL, "grad_rtol": GRAD_RTOL, "grad_atol": GRAD_ATOL},
            "totals": dict(totals), "packages": results, "declines": summarize_declines(results),
            "seconds": round(time.perf_counter() - t0, 1)}
    data = json.loads(scrub(json.dumps(data), roots))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.md"), "w", encoding="utf-8") as f:
        f.write(scrub(write_markdown(data), roots))
    log(f"wrote benchmarks/results/{RESULT_NAME}.json and .md ({data['seconds']:.0f} s)")
    bad = totals["different"] + totals["crashed"] + totals["changed_by_second_write"] + totals["upstream_failures"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
