"""Real-code audit: rewrite JAX-ecosystem packages from PyPI and execute every rewrite.

For each package (jax, flax, optax, chex, equinox, ... see ``PACKAGES``):

1. **Environment.**  The package is installed into a separate virtual
   environment (``build/audit-venv``, created on first use) with jax, jaxlib
   and numpy pinned to the versions of the interpreter running this script,
   plus pytest and the usual test dependencies.  A package that does not
   install or import there is recorded with the reason.
2. **Source.**  The installed files of the distribution (its ``RECORD``) are
   copied to a scratch directory, with the tests its sdist carries and the
   wheel lacks (``pip download --no-deps --no-binary :all: NAME==VERSION``):
   test files inside the package directories and top-level ``tests/``
   directories (these are test harness, never rewritten).
3. **Rewrite.**  loop2scan (``--tool-rev REV``: that git revision, from a
   worktree under ``build/audit-tools/``; default: this working tree) runs
   ``rewrite --write --format json`` on a second copy; loops are counted by
   status and code.  A second ``--write`` must change nothing (fixed point).
   With ``--baseline-rev REV`` that revision previews the same sources too and
   every rewrite it made that the tool under test no longer makes is listed,
   with the code and message the loop gets now (loops matched by file and line).
4. **Execute.**  For each rewritten loop, the function to run is the innermost
   ``def`` holding it, widened to the outermost module-level function or
   method.  The test files that reach it are chosen statically: the module
   itself when it is a test file; test files that import the module (directly
   or through the package) and name the function, its class, a caller of it
   in the module or a caller one module away (only the test functions that use
   these names run, with ``pytest -k``); test files named after the module;
   the doctests of the module and of modules importing it that name those
   functions; and, only when none of these reached the function, whole test
   files mentioning the module or, for a small suite, its larger files.  All
   run on the *original* copy under
   ``audit_plugin.py``, which runs the rewritten version of each such
   function beside every call and compares the outputs leaf by leaf (see
   that file).  Verdict per rewrite: ``equal`` (at least one call compared,
   all equal), ``different``, ``crashed`` (the rewrite raised where the
   original ran) or ``not-executable`` (with the reason: no test reached it,
   the package ships no tests, the values were only traced, ...).
5. **Upstream tests.**  The same tests run with plain pytest on the rewritten
   copy; each test that does not pass there runs again with plain pytest on
   both copies, and one that passes on the original and fails on the
   rewritten copy is an upstream failure.

Results: ``benchmarks/results/real_audit.json`` and ``real_audit.md`` (paths
relative to each package's root; no local path is written).  Exit status 1
when a ``different`` or ``crashed`` rewrite, an upstream failure or a file
changed by the second ``--write`` is found; 2 for a usage error.  The share of
rewrites executed (target: at least half) is reported beside them.

    .venv/bin/python benchmarks/real_audit.py --tool-rev HEAD            # everything (1 to 2 hours on 2 cores)
    .venv/bin/python benchmarks/real_audit.py --quick --tool-rev HEAD    # two small packages
    .venv/bin/python benchmarks/real_audit.py --packages rlax,dm-pix --baseline-rev HEAD~5
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from typing import Iterable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH_DIR, REPO_ROOT, RESULTS_DIR, log, machine_info, machine_line, now_iso, redact, \
    snapshot  # noqa: E402

BUILD_DIR = os.path.join(REPO_ROOT, "build")
DEFAULT_VENV = os.path.join(BUILD_DIR, "audit-venv")
DEFAULT_SCRATCH = os.path.join(BUILD_DIR, "audit-scratch")
CACHE_DIR = os.path.join(BUILD_DIR, "audit-cache")
TOOLS_DIR = os.path.join(BUILD_DIR, "audit-tools")
PLUGIN_SOURCE = os.path.join(BENCH_DIR, "audit_plugin.py")
PLUGIN_MODULE = "l2s_audit_plugin"

# Test tools every package's tests may need; jax, jaxlib and numpy are pinned (see AuditEnv.ensure).
TEST_REQUIREMENTS = ("pytest", "absl-py", "parameterized", "hypothesis", "cloudpickle")


@dataclass(frozen=True)
class Package:
    """A distribution to audit: its PyPI name and what its tests need besides ``TEST_REQUIREMENTS``."""

    dist: str
    test_requirements: tuple[str, ...] = ()
    note: str = ""


PACKAGES = (  # the largest (jax) last: results are written after every package
    Package("flax", ("tensorflow-datasets",)),
    Package("optax"),
    Package("chex"),
    Package("equinox", ("optax",)),
    Package("diffrax", ("optax",)),
    Package("distrax"),
    Package("dm-haiku"),
    Package("optimistix"),
    Package("lineax"),
    Package("jaxopt", ("scikit-learn",)),
    Package("numpyro"),
    Package("blackjax"),
    Package("jax-md", ("netCDF4", "ase")),
    Package("evosax"),
    Package("rlax", ("dm-haiku",)),
    Package("mctx"),
    Package("jraph"),
    Package("jaxtyping"),
    Package("einops"),
    Package("penzai"),
    Package("orbax-checkpoint"),
    Package("brax"),
    Package("gymnax"),
    Package("ott-jax"),
    Package("dm-pix"),
    Package("augmax"),
    Package("jax"),
)
QUICK = ("rlax", "dm-pix")
TEST_FILE = re.compile(r"(^test_.*|.*_test)\.py$")


# --------------------------------------------------------------------------- small helpers

def run_cmd(cmd: list[str], *, cwd: str | None = None, env: dict | None = None, timeout: float | None = None,
            ) -> tuple[int | None, str, str, float]:
    """Run ``cmd`` in its own process group; (exit code or None on timeout, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return code, out, err, time.perf_counter() - t0


def last_error_line(text: str) -> str:
    """The most telling line of a failed command's output."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("ERROR") or "Error" in ln.split(":")[0]:
            return ln[:300]
    return (lines[-1] if lines else "")[:300]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


# --------------------------------------------------------------------------- the tool under test

class Tool:
    """loop2scan at one git revision (a worktree under ``build/audit-tools``) or the working tree."""

    def __init__(self, rev: Optional[str], args: tuple[str, ...] = ()) -> None:
        self.rev = rev
        self.args = tuple(args)  # more options of every `loop2scan rewrite`
        if rev is None:
            self.root = REPO_ROOT
            info = machine_info()["loop2scan_source"]
            self.commit = info.get("commit")
            self.describe = "working tree" + (" (with local changes)" if info.get("local_changes") else "")
        else:
            self.commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
            self.root = os.path.join(TOOLS_DIR, self.commit[:12])
            if not os.path.isdir(os.path.join(self.root, "loop2scan")):
                os.makedirs(TOOLS_DIR, exist_ok=True)
                git("worktree", "add", "--detach", "--force", self.root, self.commit)
            self.describe = f"revision {rev} ({self.commit[:10]})"
        self.version = self._version()

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.root
        env.setdefault("PYTHONHASHSEED", "0")
        return env

    def _version(self) -> str:
        code, out, err, _ = run_cmd([sys.executable, "-P", "-c",
                                     "import os, loop2scan; print(loop2scan.__version__, "
                                     "os.path.dirname(os.path.dirname(loop2scan.__file__)))"],
                                    cwd=tempfile.gettempdir(), env=self.env(), timeout=120)
        if code != 0:
            raise RuntimeError(f"loop2scan does not import from {self.describe}: {last_error_line(err)}")
        version, where = out.split()
        if os.path.realpath(where) != os.path.realpath(self.root):
            raise RuntimeError(f"loop2scan imported from elsewhere than {self.describe}")
        return version

    def rewrite(self, cwd: str, paths: list[str], write: bool, jobs: int) -> dict:
        """The JSON report of ``loop2scan rewrite PATHS [--write]`` run in ``cwd``."""
        cmd = [sys.executable, "-P", "-m", "loop2scan", "rewrite", *paths, "--format", "json", "--jobs", str(jobs),
               *self.args]
        if write:
            cmd.append("--write")
        code, out, err, seconds = run_cmd(cmd, cwd=cwd, env=self.env(), timeout=1800)
        if code not in (0, 1, 2) or not out.strip():
            raise RuntimeError(f"loop2scan rewrite exited {code}: {last_error_line(err)}")
        report = json.loads(out)
        report["seconds"] = round(seconds, 2)
        report["stderr_lines"] = [ln for ln in err.splitlines() if ln.strip()][:20]
        return report

    def to_json(self) -> dict:
        return {"rev": self.rev, "commit": self.commit, "source": self.describe, "loop2scan": self.version,
                "options": list(self.args)}


# --------------------------------------------------------------------------- the audit environment

ENV_INFO_SCRIPT = r"""
import json, sys
from importlib import metadata
out = {}
for name in sys.argv[1:]:
    try:
        d = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        out[name] = None
        continue
    base = str(d.locate_file(""))
    out[name] = {"version": d.version, "base": base,
                 "files": [str(f) for f in (d.files or [])]}
print(json.dumps(out))
"""


class AuditEnv:
    """The separate virtual environment where packages are installed and their tests run."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.python = os.path.join(path, "bin", "python")
        self.constraints = os.path.join(path, "audit-constraints.txt")
        self.site_packages = os.path.join(
            path, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")

    def pinned(self) -> dict[str, str]:
        pins = {}
        for dist in ("jax", "jaxlib", "numpy"):
            try:
                pins[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return pins

    def ensure(self) -> None:
        if not os.path.exists(self.python):
            log(f"creating the audit environment {os.path.relpath(self.path, REPO_ROOT)}")
            code, _, err, _ = run_cmd([sys.executable, "-m", "venv", self.path], timeout=600)
            if code != 0:
                raise RuntimeError(f"python -m venv failed: {last_error_line(err)}")
        with open(self.constraints, "w", encoding="utf-8") as f:
            f.writelines(f"{d}=={v}\n" for d, v in self.pinned().items())
        missing = [r for r in (*self.pinned(), *TEST_REQUIREMENTS) if self.info([r]).get(r) is None]
        if missing:
            error = self.pip_install(missing)
            if error:
                raise RuntimeError(f"installing {', '.join(missing)} failed: {error}")

    def pip_install(self, requirements: Iterable[str]) -> Optional[str]:
        """Install (pins applied); None on success, else the reason."""
        cmd = [self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", self.constraints,
               *requirements]
        code, out, err, _ = run_cmd(cmd, timeout=1800)
        if code == 0:
            return None
        return "pip install timed out" if code is None else last_error_line(err or out)

    def info(self, dists: list[str]) -> dict:
        code, out, err, _ = run_cmd([self.python, "-c", ENV_INFO_SCRIPT, *dists], timeout=300)
        if code != 0:
            raise RuntimeError(f"reading the audit environment failed: {last_error_line(err)}")
        return json.loads(out)

    def install_package(self, pkg: Package) -> tuple[Optional[dict], Optional[str], list[str]]:
        """Install ``pkg`` and its test requirements when missing: (distribution info or None, error, notes)."""
        notes = []
        error = None
        info = self.info([pkg.dist]).get(pkg.dist)
        if info is None:
            log(f"[{pkg.dist}] installing into the audit environment")
            error = self.pip_install([pkg.dist])
            info = self.info([pkg.dist]).get(pkg.dist)
        missing = [r for r in pkg.test_requirements if self.info([r]).get(r) is None]
        if info is not None and missing:
            problem = self.pip_install(missing)
            if problem:
                notes.append(f"test requirements {', '.join(missing)} not installed: {problem}")
        return info, error, notes

    def versions(self) -> dict:
        names = ("jax", "jaxlib", "numpy", "pytest")
        return {n: (v or {}).get("version") for n, v in self.info(list(names)).items()}

    def test_env(self, pythonpath: list[str]) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JAX_", "XLA_", "VIRTUAL_ENV"))}
        env.update({
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "JAX_PLATFORMS": "cpu",
            "MPLBACKEND": "Agg",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": os.path.join(self.path, "bin") + os.pathsep + os.environ.get("PATH", ""),
        })
        return env


# --------------------------------------------------------------------------- sources

def fetch_sdist(dist: str, version: str, env: AuditEnv) -> tuple[Optional[str], str]:
    """The extracted sdist directory of ``dist==version`` (cached), or None and the reason."""
    stem = f"{normalize(dist).replace('-', '_')}-{version}"
    target = os.path.join(CACHE_DIR, "sdist-src", stem)
    if os.path.isdir(target):
        return target, "cached"
    download = os.path.join(CACHE_DIR, "sdists")
    os.makedirs(download, exist_ok=True)

    def archives() -> list[str]:
        want = normalize(f"{dist}-{version}")
        return [p for p in glob.glob(os.path.join(download, "*"))
                if normalize(re.sub(r"\.(tar\.gz|zip|tgz)$", "", os.path.basename(p))) == want]

    if not archives():
        code, out, err, _ = run_cmd([env.python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                                     "--no-deps", "--no-binary", ":all:", "-d", download, f"{dist}=={version}"],
                                    timeout=900)
        if code != 0:
            return None, "sdist not available: " + ("timed out" if code is None else last_error_line(err or out))
    found = archives()
    if not found:
        return None, "sdist not available: no archive for this version"
    tmp = target + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    archive = found[0]
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    entries = os.listdir(tmp)
    root = os.path.join(tmp, entries[0]) if len(entries) == 1 else tmp
    shutil.move(root, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target, "downloaded"


def installed_files(info: dict) -> tuple[list[str], list[str]]:
    """(files of the distribution relative to site-packages, its top-level package paths)."""
    files, tops = [], set()
    for rel in info["files"]:
        parts = rel.replace("\\", "/").split("/")
        if parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info")) or "__pycache__" in parts:
            continue
        if rel.endswith((".pyc", ".pyo")):
            continue
        files.append(rel)
        if rel.endswith(".py"):
            tops.add(parts[0] if len(parts) > 1 else rel)
    # namespace packages (no __init__.py at the top): audit the portion this distribution owns
    roots = []
    for top in sorted(tops):
        if top.endswith(".py"):
            roots.append(top)
            continue
        path = top
        while not any(f == f"{path}/__init__.py" for f in files):
            subs = {f.split("/")[len(path.split("/"))] for f in files if f.startswith(path + "/")
                    and len(f.split("/")) > len(path.split("/")) + 1}
            if len(subs) != 1:
                break
            path = f"{path}/{subs.pop()}"
        roots.append(path)
    return files, roots


def copy_sources(info: dict, sdist: Optional[str], dest: str) -> dict:
    """Copy the installed package and the sdist's tests into ``dest``; return what was copied."""
    files, roots = installed_files(info)
    base = info["base"]
    for rel in files:
        src = os.path.join(base, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))
    added_in_package, harness = [], []
    if sdist:
        have = set(files)
        for root in roots:
            src_root = os.path.join(sdist, root)
            if root.endswith(".py") or not os.path.isdir(src_root):
                src_root = os.path.join(sdist, "src", root)  # src/ layouts
                if not os.path.isdir(src_root):
                    continue
            for dirpath, dirnames, filenames in os.walk(src_root):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                for name in filenames:
                    rel = os.path.join(root, os.path.relpath(os.path.join(dirpath, name), src_root))
                    rel = os.path.normpath(rel).replace(os.sep, "/")
                    in_test_dir = any(p.startswith("test") for p in rel.split("/")[:-1])
                    if rel in have or not (TEST_FILE.match(name) or name == "conftest.py" or in_test_dir):
                        continue
                    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                    shutil.copy2(os.path.join(dirpath, name), os.path.join(dest, rel))
                    added_in_package.append(rel)
        for name in ("tests", "test", "conftest.py"):
            src = os.path.join(sdist, name)
            if os.path.isdir(src) and not os.path.exists(os.path.join(dest, name)):
                shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__"))
                harness.append(name + "/")
            elif os.path.isfile(src):
                shutil.copy2(src, os.path.join(dest, name))
                harness.append(name)
    # an empty configuration: pytest must not pick up a pyproject.toml above the scratch directory
    with open(os.path.join(dest, "pytest.ini"), "w", encoding="utf-8") as f:
        f.write("[pytest]\n")
    return {"roots": roots, "installed_files": len(files), "sdist_test_files_added": len(added_in_package),
            "sdist_test_dirs": harness}


# --------------------------------------------------------------------------- static analysis of the copy

def module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class SourceIndex:
    """Modules of one copy: their imports (for the importer graph) and the names they mention."""

    def __init__(self, root: str, roots: list[str], harness: list[str]) -> None:
        self.root = root
        self.modules: dict[str, str] = {}  # dotted name -> relative path
        self.trees: dict[str, ast.Module] = {}
        self.sources: dict[str, str] = {}
        self.test_files: list[str] = []
        for top in list(roots) + [h.rstrip("/") for h in harness]:
            path = os.path.join(root, top)
            if os.path.isfile(path) and top.endswith(".py"):
                self._add(top)
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        self._add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
        self.imports = {rel: self._imports(rel) for rel in self.trees}
        importers: dict[str, set[str]] = {}
        for rel, mods in self.imports.items():
            for m in mods:
                if m in self.modules:
                    importers.setdefault(self.modules[m], set()).add(rel)
        self.importers = importers

    def _add(self, rel: str) -> None:
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
            tree = ast.parse(text)
        except (OSError, SyntaxError, ValueError):
            return
        self.trees[rel] = tree
        self.sources[rel] = text
        self.modules[module_name(rel)] = rel
        if TEST_FILE.match(os.path.basename(rel)) and re.search(r"^\s*(def test|class Test)", text, re.M):
            self.test_files.append(rel)

    def _imports(self, rel: str) -> set[str]:
        package = module_name(rel) if rel.endswith("__init__.py") else module_name(rel).rpartition(".")[0]
        out = set()
        for node in ast.walk(self.trees[rel]):
            if isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1] if node.level > 1 else base
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                parts = mod.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
                out.update(f"{mod}.{a.name}" for a in node.names)
        return out

    def reaching(self, rel: str) -> set[str]:
        """``rel`` and every module that imports it, directly or through other modules."""
        seen, todo = {rel}, [rel]
        while todo:
            for imp in self.importers.get(todo.pop(), ()):
                if imp not in seen:
                    seen.add(imp)
                    todo.append(imp)
        return seen

    def mentioned(self, rel: str) -> set[str]:
        names = set()
        for node in ast.walk(self.trees[rel]):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[-1])
                names.add(node.name.split(".")[-1])
        return names


DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def enclosing_target(tree: ast.Module, line: int) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(qualified name of the outermost module-level function or method holding
    ``line``, name of the innermost ``def`` holding it, reason when there is none)."""
    chain: list[ast.AST] = []

    def walk(node: ast.AST, stack: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, DEFS) and child.lineno <= line <= (child.end_lineno or child.lineno):
                inner = stack + [child]
                if len(inner) > len(chain):
                    chain[:] = inner
                walk(child, inner)
            else:
                walk(child, stack)

    walk(tree, [])
    defs = [n for n in chain if not isinstance(n, ast.ClassDef)]
    if not defs:
        return None, None, "the loop runs at module or class level, outside any function"
    names = []
    for node in chain:
        names.append(node.name)
        if not isinstance(node, ast.ClassDef):
            break  # the outermost def; the classes around it make its qualified name
    return ".".join(names), defs[-1].name, None


def tests_using(tree: ast.Module, names: set[str]) -> Optional[set[str]]:
    """Names of the test functions of a test file that use one of ``names``,
    directly or through helper functions of the same file; None when there is none."""
    uses: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            used = uses.setdefault(node.name, set())
            for x in ast.walk(node):
                if isinstance(x, ast.Name):
                    used.add(x.id)
                elif isinstance(x, ast.Attribute):
                    used.add(x.attr)
    wanted, changed = set(names), True
    while changed:
        changed = False
        for fname, used in uses.items():
            if not fname.startswith("test") and fname not in wanted and used & wanted:
                wanted.add(fname)
                changed = True
    tests = {f for f, used in uses.items() if f.startswith("test") and (used & wanted or f in names)}
    return tests or None


def users_in_module(tree: ast.Module, names: set[str]) -> set[str]:
    """Top-level functions and classes of a module whose bodies use one of ``names``."""
    out = set()
    for node in tree.body:
        if isinstance(node, DEFS):
            used = {x.id for x in ast.walk(node) if isinstance(x, ast.Name)} | \
                   {x.attr for x in ast.walk(node) if isinstance(x, ast.Attribute)}
            if used & names:
                out.add(node.name)
    return out


def callers_in_module(tree: ast.Module, name: str) -> set[str]:
    """Top-level functions and classes of the module that use ``name``, transitively."""
    tops = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    uses = {k: {x.id for x in ast.walk(v) if isinstance(x, ast.Name)} |
            {x.attr for x in ast.walk(v) if isinstance(x, ast.Attribute)} for k, v in tops.items()}
    found, todo = {name}, [name]
    while todo:
        current = todo.pop()
        for k, used in uses.items():
            if current in used and k not in found:
                found.add(k)
                todo.append(k)
    return found


# --------------------------------------------------------------------------- one package

@dataclass
class Rewrite:
    file: str
    line: int
    loop: dict
    qualname: Optional[str] = None
    function: Optional[str] = None
    reason: Optional[str] = None

    @property
    def key(self) -> Optional[str]:
        return f"{self.file}::{self.qualname}" if self.qualname else None


@dataclass
class TestRun:
    """One pytest invocation (test files or a module's doctests), run three times."""

    label: str
    args: list[str]
    targets: set[str] = field(default_factory=set)
    keywords: Optional[set[str]] = None  # test function names to select with -k; None: the whole file
    fallback: bool = False  # run only when a function it reaches is still unreached


def count_report(report: dict) -> dict:
    by_status: dict[str, int] = {}
    by_code: dict[str, int] = {}
    for f in report["files"]:
        for loop in f["loops"]:
            by_status[loop["status"]] = by_status.get(loop["status"], 0) + 1
            if loop["status"] == "declined":
                by_code[loop["code"]] = by_code.get(loop["code"], 0) + 1
    return {
        "files": len(report["files"]),
        "loops": sum(by_status.values()),
        "rewritten": by_status.get("rewritten", 0),
        "declined": by_status.get("declined", 0),
        "declined_by_code": dict(sorted(by_code.items())),
        "not_candidates": by_status.get("not-candidate", 0),
        "skipped": by_status.get("skipped", 0),
        "errors": [f"{f['path']}: {f['error']}" for f in report["files"] if f.get("error")],
        "seconds": report.get("seconds"),
    }


def loops_by_position(report: dict) -> dict[tuple[str, int], dict]:
    return {(os.path.normpath(f["path"]).replace(os.sep, "/"), loop["line"]): loop
            for f in report["files"] for loop in f["loops"]}


class PackageAudit:
    """Everything the audit does for one package; ``run()`` returns its JSON record."""

    def __init__(self, pkg: Package, ctx: "Context") -> None:
        self.pkg = pkg
        self.ctx = ctx
        self.work = os.path.join(ctx.scratch, normalize(pkg.dist))
        self.orig = os.path.join(self.work, "original")
        self.new = os.path.join(self.work, "rewritten")
        self.runs_dir = os.path.join(self.work, "runs")
        self.record: dict = {"dist": pkg.dist}

    # -- helpers
    def rel_text(self, text: str) -> str:
        """Messages with the scratch paths made relative to the package root."""
        for path in (self.orig, self.new, self.work):
            text = text.replace(path + os.sep, "").replace(path, ".")
        return text.replace(self.ctx.env.site_packages + os.sep, "<site-packages>/")

    def log(self, msg: str) -> None:
        log(f"[{self.pkg.dist}] {msg}")

    # -- the steps
    def run(self) -> dict:
        t0 = time.perf_counter()
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - one package never stops the audit
            self.record["not_audited"] = f"audit error: {type(e).__name__}: {self.rel_text(str(e))[:300]}"
            self.log(self.record["not_audited"])
        self.record["seconds"] = round(time.perf_counter() - t0, 1)
        if not self.ctx.keep_scratch:
            shutil.rmtree(self.work, ignore_errors=True)
        return self.record

    def _run(self) -> None:
        env = self.ctx.env
        info, error, notes = self.ctx.installed[self.pkg.dist]
        if notes:
            self.record["notes"] = notes
        if info is None:
            self.record["not_audited"] = f"does not install against the pinned jax: {error}"
            return
        self.record["version"] = info["version"]
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.runs_dir)
        sdist, how = fetch_sdist(self.pkg.dist, info["version"], env)
        self.record["sdist"] = how
        source = copy_sources(info, sdist, self.orig)
        self.record["source"] = source
        roots = source["roots"]
        import_names = [r[:-3] if r.endswith(".py") else r.replace("/", ".") for r in roots]
        code, _, err, _ = run_cmd([env.python, "-c", "import " + ", ".join(import_names)], cwd=self.orig,
                                  env=env.test_env([self.orig]), timeout=600)
        self.import_error = None if code == 0 else ("import timed out" if code is None else last_error_line(err))
        if self.import_error:
            self.record["import_error"] = self.rel_text(self.import_error)
        shutil.copytree(self.orig, self.new, symlinks=True)

        # rewrite, then the fixed point check
        self.log(f"{info['version']}: rewriting {', '.join(roots)} ({self.ctx.tool.describe})")
        before = snapshot(self.new)
        report = self.ctx.tool.rewrite(self.new, roots, write=True, jobs=self.ctx.tool_jobs)
        after = snapshot(self.new)
        again = self.ctx.tool.rewrite(self.new, roots, write=True, jobs=self.ctx.tool_jobs)
        final = snapshot(self.new)
        self.record["counts"] = count_report(report)
        self.record["files_changed"] = sorted(p for p in after if before.get(p) != after[p])
        self.record["second_run_changed"] = sorted(p for p in final if after.get(p) != final[p])
        self.record["second_run_rewritten"] = count_report(again)["rewritten"]
        if self.ctx.baseline is not None:
            base = self.ctx.baseline.rewrite(self.orig, roots, write=False, jobs=self.ctx.tool_jobs)
            self.record["baseline_counts"] = count_report(base)
            self.record["lost_rewrites"] = self.lost_rewrites(base, report)

        rewrites = self.find_rewrites(report)
        runs = self.choose_runs(rewrites, source)
        results, outcomes = self.execute(rewrites, runs)
        self.record["rewrites"] = self.verdicts(rewrites, runs, results)
        self.record["test_runs"] = outcomes
        self.record["upstream_failures"] = [f for r in outcomes for f in r.get("upstream_failures", [])]

    def lost_rewrites(self, base: dict, current: dict) -> list[dict]:
        now = loops_by_position(current)
        lost = []
        for (path, line), loop in sorted(loops_by_position(base).items()):
            if loop["status"] != "rewritten":
                continue
            cur = now.get((path, line))
            if cur is None or cur["status"] != "rewritten":
                lost.append({"file": path, "line": line, "baseline_message": loop.get("message"),
                             "status_now": cur["status"] if cur else "not found",
                             "code_now": cur.get("code") if cur else None,
                             "message_now": cur.get("message") if cur else None})
        return lost

    def find_rewrites(self, report: dict) -> list[Rewrite]:
        out = []
        for f in report["files"]:
            rel = os.path.normpath(f["path"]).replace(os.sep, "/")
            for loop in f["loops"]:
                if loop["status"] != "rewritten":
                    continue
                rw = Rewrite(rel, loop["line"], loop)
                try:
                    with open(os.path.join(self.orig, rel), "rb") as fh:
                        tree = ast.parse(fh.read())
                    rw.qualname, rw.function, rw.reason = enclosing_target(tree, loop["line"])
                except (OSError, SyntaxError, ValueError) as e:
                    rw.reason = f"original file not parsed: {e}"
                out.append(rw)
        return out

    def choose_runs(self, rewrites: list[Rewrite], source: dict) -> list[TestRun]:
        """Test files (and doctest modules) that reach each rewritten function, best first."""
        targets = [rw for rw in rewrites if rw.key]
        if not targets:
            return []
        index = SourceIndex(self.orig, source["roots"], source["sdist_test_dirs"])
        mentions = {rel: index.mentioned(rel) for rel in index.test_files}
        runs: dict[tuple[str, ...], TestRun] = {}
        fallback: dict[str, TestRun] = {}
        for rw in targets:
            if rw.file not in index.trees:
                continue
            tree = index.trees[rw.file]
            outer = rw.qualname.split(".")[0]
            interest = callers_in_module(tree, outer) | {outer, rw.qualname.split(".")[-1]}
            for rel in index.importers.get(rw.file, ()):  # callers one module away (public entry points)
                if rel not in index.test_files:
                    interest |= users_in_module(index.trees[rel], interest)
            interest -= {"__call__", "__init__", "setUp", "main"}
            reach = index.reaching(rw.file)
            base = os.path.splitext(os.path.basename(rw.file))[0]
            reach_names = {module_name(r) for r in reach}
            reaching_tests = [rel for rel in index.test_files if index.imports[rel] & reach_names]
            scored = []
            for rel in index.test_files:
                size = len(index.sources[rel])
                if rel == rw.file:
                    scored.append((0, 0, 0, rel))
                elif rel not in reaching_tests:
                    continue
                elif mentions[rel] & interest:  # names the function, its class or a caller
                    scored.append((1, -len(mentions[rel] & interest), size, rel))
                elif os.path.splitext(os.path.basename(rel))[0] in (f"test_{base}", f"{base}_test"):
                    scored.append((2, 0, size, rel))
                elif len(base) >= 4 and base.lower() in index.sources[rel].lower():  # e.g. a registry key
                    scored.append((3, 0, size, rel))
                elif len(reaching_tests) <= self.ctx.max_runs:  # a small suite: its larger files
                    scored.append((4, 0, -size, rel))
            scored.sort(key=lambda s: s[:-1])
            n = self.ctx.files_per_target
            for tier, *_, rel in [s for s in scored if s[0] <= 2][:n]:
                run = runs.setdefault((rel,), TestRun(rel, [rel], keywords=set()))
                run.targets.add(rw.key)
                names = tests_using(index.trees[rel], interest | {rw.qualname.split(".")[-1]}) if tier <= 1 else None
                run.keywords = None if names is None or run.keywords is None else run.keywords | names
            # weaker evidence: whole files, run only for functions the runs above did not reach
            for *_, rel in [s for s in scored if s[0] > 2][:n]:
                fallback.setdefault(rel, TestRun(f"{rel} (fallback)", [rel], fallback=True)).targets.add(rw.key)
            # doctests: the module itself and modules importing it that name the function or its callers
            doc_modules = [rw.file] if ">>>" in index.sources[rw.file] else []
            for rel in sorted(index.importers.get(rw.file, ())):
                if len(doc_modules) >= 3:
                    break
                if rel != rw.file and ">>>" in index.sources[rel] and index.mentioned(rel) & interest:
                    doc_modules.append(rel)
            for rel in doc_modules:
                runs.setdefault(("--doctest-modules", rel), TestRun(f"doctests of {rel}",
                                                                   ["--doctest-modules", rel])).targets.add(rw.key)
        chosen = sorted(runs.values(), key=lambda r: (-len(r.targets), r.label))[:self.ctx.max_runs]
        chosen += sorted(fallback.values(), key=lambda r: (-len(r.targets), r.label))[:self.ctx.max_runs]
        for run in chosen:
            if run.keywords:  # only the tests that use the functions (pytest -k matches name parts)
                run.args = run.args + ["-k", " or ".join(sorted(run.keywords))]
                run.label += f" ({len(run.keywords)} test function(s))"
        return chosen

    # -- running tests
    def pytest(self, cwd: str, args: list[str], name: str, spec: Optional[str] = None) -> dict:
        outcomes = os.path.join(self.runs_dir, f"{name}.outcomes.jsonl")
        result = os.path.join(self.runs_dir, f"{name}.result.json")
        for p in (outcomes, result):
            if os.path.exists(p):
                os.remove(p)
        env = self.ctx.env.test_env([cwd, self.ctx.plugin_dir])
        env["L2S_AUDIT_OUTCOMES"] = outcomes
        if spec:
            env["L2S_AUDIT_SPEC"] = spec
            env["L2S_AUDIT_RESULT"] = result
        cmd = [self.ctx.env.python, "-m", "pytest", "-p", PLUGIN_MODULE, "-p", "no:cacheprovider", "-q",
               "--rootdir", cwd, "-c", os.path.join(cwd, "pytest.ini"), "-o", "addopts=", "--tb=line", *args]
        code, out, err, seconds = run_cmd(cmd, cwd=cwd, env=env, timeout=self.ctx.test_timeout)
        tests: dict[str, dict] = {}
        if os.path.exists(outcomes):
            with open(outcomes, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    prev = tests.get(rec["nodeid"])
                    if prev is None or prev["outcome"] in ("passed", "skipped"):
                        tests[rec["nodeid"]] = rec
        data = None
        if spec and os.path.exists(result):
            with open(result, encoding="utf-8") as f:
                data = json.load(f)
        tail = self.rel_text("\n".join((out + err).strip().splitlines()[-3:]))
        return {"exit": code, "timed_out": code is None, "seconds": round(seconds, 1), "tests": tests,
                "plugin": data, "tail": tail}

    def execute(self, rewrites: list[Rewrite], runs: list[TestRun]) -> tuple[dict, list[dict]]:
        """Each chosen test run: with the comparison plugin on the original copy,
        then plain on the rewritten copy; the tests that do not pass after the
        rewrite run plain again on both copies (see ``upstream_failures``)."""
        targets = {}
        for rw in rewrites:
            if rw.key and rw.key not in targets:
                targets[rw.key] = {"key": rw.key, "path": os.path.join(self.orig, rw.file),
                                   "module": module_name(rw.file), "qualname": rw.qualname,
                                   "rewritten_path": os.path.join(self.new, rw.file)}
        spec_path = os.path.join(self.runs_dir, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump({"targets": list(targets.values()), "max_calls": self.ctx.max_calls}, f, indent=1)
        merged: dict[str, dict] = {}
        records = []
        started = time.perf_counter()
        for i, run in enumerate(runs):
            record = {"run": run.label, "args": [self.rel_text(a) for a in run.args], "targets": sorted(run.targets)}
            records.append(record)
            reached = [k for k in run.targets if merged.get(k, {}).get("calls")]
            if len(reached) == len(run.targets):
                record["skipped"] = "every function it reaches was executed by an earlier run"
                continue
            if run.fallback:  # for the functions still unreached only
                run.targets -= set(reached)
                record["targets"] = sorted(run.targets)
            if time.perf_counter() - started > self.ctx.package_budget:
                record["skipped"] = f"the package's test time budget ({self.ctx.package_budget:.0f} s) was spent"
                continue
            self.log(f"tests {i + 1}/{len(runs)}: {run.label}")
            compared = self.pytest(self.orig, run.args, f"run{i}-compare", spec_path)
            if any(rec["outcome"] == "passed" for rec in compared["tests"].values()):
                after = self.pytest(self.new, run.args, f"run{i}-after")
            else:  # nothing passes on the original: nothing can start failing
                after = {"skipped": "no test passed on the original", "tests": {}}
            for t in (compared.get("plugin") or {}).get("targets", []):
                m = merged.setdefault(t["key"], {"runs": 0})
                m["runs"] += 1
                for k, v in t.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        m[k] = m.get(k, 0) + v
                    elif isinstance(v, list):
                        m[k] = (m.get(k, []) + [x for x in v if x not in m.get(k, [])])[:10]
                    elif k == "install_error" and v:
                        m[k] = v
            record.update({"original_with_comparison": self.summary(compared), "rewritten": self.summary(after)})
            record["upstream_failures"] = self.upstream_failures(run, compared, after, i)
        return merged, records

    @staticmethod
    def summary(r: dict) -> dict:
        counts: dict[str, int] = {}
        for rec in r["tests"].values():
            counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
        if r.get("skipped"):
            return {"skipped": r["skipped"]}
        return {"exit": r["exit"], "timed_out": r["timed_out"], "seconds": r["seconds"], **counts,
                **({"tail": r["tail"]} if r["exit"] not in (0, 1) else {})}

    def upstream_failures(self, run: TestRun, compared: dict, after: dict, i: int) -> list[dict]:
        """Tests that pass with plain pytest on the original and fail on the
        rewritten copy.  Every test that did not pass after the rewrite (or was
        lost to a crash or time-out of that run) while it passed or failed in the
        comparison run runs again, plain, on both copies; it counts when it
        passes on the original and fails on the rewritten copy."""
        if after.get("skipped"):
            return []
        suspects = [n for n, rec in compared["tests"].items() if rec["outcome"] in ("passed", "failed", "error")
                    and (n not in after["tests"] or after["tests"][n]["outcome"] in ("failed", "error"))]
        confirmed = []
        if after["timed_out"] and not compared["timed_out"]:
            confirmed.append({"test": f"<{run.label}>", "run": run.label,
                              "after": "the run timed out on the rewritten copy only"})
        if not suspects:
            return confirmed
        extra = ["--doctest-modules"] if "--doctest-modules" in run.args else []
        before_again = self.pytest(self.orig, extra + suspects, f"run{i}-before-plain")
        after_again = self.pytest(self.new, extra + suspects, f"run{i}-after-plain")
        for n in sorted(suspects):
            b = before_again["tests"].get(n, {}).get("outcome")
            a = after_again["tests"].get(n, {}).get("outcome")
            if b == "passed" and a not in ("passed", "skipped"):
                message = after_again["tests"].get(n, {}).get("message") or a or "not run"
                confirmed.append({"test": self.rel_text(n), "run": run.label, "after": self.rel_text(message)[:300]})
        return confirmed

    # -- verdicts
    def verdicts(self, rewrites: list[Rewrite], runs: list[TestRun], results: dict) -> list[dict]:
        out = []
        shipped_tests = bool(self.record["source"]["sdist_test_files_added"] or self.record["source"]["sdist_test_dirs"]
                             or any(TEST_FILE.match(os.path.basename(p)) for p in self.record["files_changed"])
                             or self._has_tests())
        for rw in rewrites:
            res = results.get(rw.key or "", {})
            verdict, reason = self.verdict(rw, runs, res, shipped_tests)
            loop = rw.loop
            out.append({
                "file": rw.file, "line": rw.line, "function": rw.qualname or rw.function,
                "verdict": verdict, "reason": self.rel_text(reason),
                "carry": loop.get("carry", []), "xs": [x.get("expr") + (f" as {x['as']}" if x.get("as") else "")
                                                       for x in loop.get("xs", [])],
                "ys": loop.get("ys", []), "message": loop.get("message"),
                "calls": res.get("calls", 0), "compared": res.get("compared", 0),
                "tests": res.get("tests", [])[:3],
            })
        return out

    def _has_tests(self) -> bool:
        for dirpath, _, filenames in os.walk(self.orig):
            if any(TEST_FILE.match(n) for n in filenames):
                return True
        return False

    def verdict(self, rw: Rewrite, runs: list[TestRun], res: dict, shipped_tests: bool) -> tuple[str, str]:
        if rw.key is None:
            return "not-executable", rw.reason or "no enclosing function"
        if res.get("crashed"):
            return "crashed", "; ".join(res.get("crash_details", [])[:2]) or "the rewrite raised"
        if res.get("different"):
            return "different", "; ".join(res.get("different_details", [])[:2])
        if res.get("compared"):
            how = f"{res['compared']} call(s) compared"
            if res.get("traced_compared"):
                how += f" ({res['traced_compared']} under tracing)"
            notes = res.get("notes") or []
            return "equal", how + (f"; notes: {'; '.join(notes[:2])}" if notes else "")
        if self.import_error:
            return "not-executable", f"the package does not import: {self.import_error}"
        if not shipped_tests:
            return "not-executable", "the package ships no tests (wheel and sdist)"
        if not any(rw.key in r.targets for r in runs):
            return "not-executable", "no test file or doctest found that reaches the function"
        if res.get("install_error"):
            return "not-executable", f"not wrapped: {res['install_error']}"
        if res.get("traced"):
            notes = [n for n in res.get("notes", []) if n.startswith("traced")]
            return "not-executable", "reached only under tracing and never run: values not compared" + \
                (f" ({notes[0]})" if notes else "")
        if res.get("calls") and res.get("original_raised") == res.get("calls"):
            return "not-executable", "the original raised on every call reached"
        if res.get("calls"):
            return "not-executable", "reached, but not compared: " + "; ".join(res.get("notes", [])[:2])
        if res.get("installed"):
            return "not-executable", "imported by the tests run, but never called"
        return "not-executable", "the tests run did not import the module"


# --------------------------------------------------------------------------- the whole audit

@dataclass
class Context:
    env: AuditEnv
    tool: Tool
    baseline: Optional[Tool]
    scratch: str
    plugin_dir: str
    keep_scratch: bool
    tool_jobs: int
    test_timeout: float
    max_calls: int
    files_per_target: int
    max_runs: int
    package_budget: float
    installed: dict = field(default_factory=dict)  # dist -> (info, install error, notes)


def totals(packages: dict) -> dict:
    keys = ("files", "loops", "rewritten", "declined", "not_candidates")
    total = {k: 0 for k in keys}
    total.update({"executed": 0, "equal": 0, "different": 0, "crashed": 0, "not_executable": 0,
                  "upstream_failures": 0, "second_run_changed": 0, "lost_rewrites": 0, "baseline_rewritten": 0})
    for rec in packages.values():
        c = rec.get("counts")
        if not c:
            continue
        for k in keys:
            total[k] += c[k]
        for k, v in package_verdicts(rec).items():
            total[k] += v
        total["upstream_failures"] += len(rec.get("upstream_failures", []))
        total["second_run_changed"] += len(rec.get("second_run_changed", []))
        total["lost_rewrites"] += len(rec.get("lost_rewrites", []))
        total["baseline_rewritten"] += (rec.get("baseline_counts") or {}).get("rewritten", 0)
    return total


def package_verdicts(rec: dict) -> dict:
    v = {"executed": 0, "equal": 0, "different": 0, "crashed": 0, "not_executable": 0}
    for rw in rec.get("rewrites", []):
        key = rw["verdict"].replace("-", "_")
        v[key] += 1
        if rw["verdict"] != "not-executable":
            v["executed"] += 1
    return v


EXIT_TARGETS = ("no_different", "no_crashed", "no_upstream_failures", "fixed_point")  # decide the exit status


def targets_met(total: dict) -> dict:
    rewritten = total["rewritten"]
    return {
        "no_different": total["different"] == 0,
        "no_crashed": total["crashed"] == 0,
        "no_upstream_failures": total["upstream_failures"] == 0,
        "fixed_point": total["second_run_changed"] == 0,
        "half_executed": rewritten == 0 or total["executed"] * 2 >= rewritten,
    }


def markdown(data: dict) -> str:
    t = data["total"]
    lines = ["# Real-code audit", "",
             f"loop2scan {data['tool']['loop2scan']}, {data['tool']['source']}"
             + (f" with `{' '.join(data['tool']['options'])}`" if data["tool"].get("options") else "") + "; "
             + (f"baseline {data['baseline']['source']}; " if data.get("baseline") else "")
             + f"{data['finished']}, {data['seconds'] / 60:.1f} min.", "",
             *([] if data.get("complete", True) else
               [f"**Partial result**: {len(data['packages'])} of {len(data['options']['packages'])} packages done.",
                ""]),
             f"Machine: {machine_line(data['machine'])}.",
             "Audit environment: " + ", ".join(f"{k} {v}" for k, v in data["audit_env"].items()) + ".", "",
             "| package | version | files | loops | rewrites | executed | equal | different | crashed "
             "| not executable | upstream failures | 2nd run changes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rec in data["packages"].items():
        c = rec.get("counts")
        if not c:
            continue
        v = package_verdicts(rec)
        lines.append(f"| {name} | {rec.get('version')} | {c['files']} | {c['loops']} | {c['rewritten']} | "
                     f"{v['executed']} | {v['equal']} | {v['different']} | {v['crashed']} | {v['not_executable']} | "
                     f"{len(rec.get('upstream_failures', []))} | {len(rec.get('second_run_changed', []))} |")
    lines.append(f"| **total** | | {t['files']} | {t['loops']} | {t['rewritten']} | {t['executed']} | {t['equal']} | "
                 f"{t['different']} | {t['crashed']} | {t['not_executable']} | {t['upstream_failures']} | "
                 f"{t['second_run_changed']} |")
    lines += ["", "Targets: " + ", ".join(f"{k.replace('_', ' ')} {'met' if ok else 'MISSED'}"
                                          for k, ok in data["targets_met"].items()) + ".", ""]
    declined: dict[str, int] = {}
    for rec in data["packages"].values():
        for code, n in (rec.get("counts") or {}).get("declined_by_code", {}).items():
            declined[code] = declined.get(code, 0) + n
    if declined:
        lines += ["Declined by code: " + ", ".join(f"{c} {n}" for c, n in sorted(declined.items())) + ".", ""]
    reasons: dict[str, int] = {}
    for rw in data["rewrites"]:
        if rw["verdict"] == "not-executable":
            reason = re.sub(r": .*", "", rw["reason"])
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        lines += ["Not executable, by reason: " + "; ".join(f"{r} ({n})" for r, n in
                                                         sorted(reasons.items(), key=lambda x: -x[1])) + ".", ""]
    lines += ["## Rewrites", "", "| package | file:line | function | verdict | reason | carry | xs | ys |",
              "|---|---|---|---|---|---|---|---|"]
    for name, rec in data["packages"].items():
        for rw in rec.get("rewrites", []):
            cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines.append(f"| {name} | {rw['file']}:{rw['line']} | {cell(rw['function'])} | {rw['verdict']} | "
                         f"{cell(rw['reason'])} | {cell(', '.join(rw['carry']))} | {cell('; '.join(rw['xs']))} | "
                         f"{cell(', '.join(rw['ys']))} |")
    failures = [(n, f) for n, rec in data["packages"].items() for f in rec.get("upstream_failures", [])]
    if failures:
        lines += ["", "## Upstream test failures (pass before, fail after)", ""]
        lines += [f"- {n}: `{f['test']}`: {f['after']}" for n, f in failures]
    lost = [(n, x) for n, rec in data["packages"].items() for x in rec.get("lost_rewrites", [])]
    if data.get("baseline"):
        lines += ["", f"## Rewrites of the baseline no longer made ({len(lost)}; baseline "
                  f"{t['baseline_rewritten']} rewrites, now {t['rewritten']})", ""]
        lines += [f"- {n}: {x['file']}:{x['line']}: now {x['status_now']} {x['code_now'] or ''}: "
                  f"{x['message_now'] or ''}" for n, x in lost]
    changed = [(n, p) for n, rec in data["packages"].items() for p in rec.get("second_run_changed", [])]
    if changed:
        lines += ["", "## Files changed by the second --write", ""] + [f"- {n}: {p}" for n, p in changed]
    if data["not_audited"]:
        lines += ["", "## Not audited", ""] + [f"- {n}: {r}" for n, r in data["not_audited"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", help="comma-separated PyPI names (default: all of PACKAGES)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--tool-rev", metavar="REV", help="run loop2scan at this git revision (default: the working tree)")
    ap.add_argument("--baseline-rev", metavar="REV",
                    help="also run this revision and list the rewrites it made that the tool no longer makes")
    ap.add_argument("--jobs", type=int, default=1, help="packages audited at the same time (default 1)")
    ap.add_argument("--tool-args", metavar="OPTIONS",
                    help="more options of loop2scan rewrite, for the audited revision only (e.g. \"--include-tests "
                         "--min-trip-count 0\": the analysis over more loops than the defaults rewrite)")
    ap.add_argument("--tool-jobs", type=int, default=None, help="loop2scan --jobs (default: all cores)")
    ap.add_argument("--test-timeout", type=float, default=300, help="seconds per pytest run (default 300)")
    ap.add_argument("--max-calls", type=int, default=20, help="calls compared per function and run (default 20)")
    ap.add_argument("--files-per-target", type=int, default=3, help="test files run per rewritten function")
    ap.add_argument("--max-runs", type=int, default=10, help="pytest runs per package at most (default 10)")
    ap.add_argument("--package-budget", type=float, default=900,
                    help="seconds of test runs per package; later runs are skipped (default 900)")
    ap.add_argument("--venv", default=DEFAULT_VENV, help="the audit environment (created when missing)")
    ap.add_argument("--scratch", default=DEFAULT_SCRATCH, help="where the package copies go")
    ap.add_argument("--keep-scratch", action="store_true", help="keep the copies and the pytest logs")
    ap.add_argument("--out", default=os.path.join(RESULTS_DIR, "real_audit.json"),
                    help="the JSON result (the markdown goes next to it, .md)")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the .md file from the JSON result")
    args = ap.parse_args(argv)
    known = {normalize(p.dist): p for p in PACKAGES}
    names = QUICK if args.quick else (args.packages.split(",") if args.packages else [p.dist for p in PACKAGES])
    args.selected = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        args.selected.append(known.get(normalize(name), Package(name)))
    if not args.selected:
        ap.error("no package selected")
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    return args


def write_markdown(json_path: str, data: dict) -> None:
    with open(os.path.splitext(json_path)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(data))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summary_only:
        with open(args.out, encoding="utf-8") as f:
            data = json.load(f)
        write_markdown(args.out, data)
        return 0 if data["ok"] else 1
    started = time.time()
    t0 = time.perf_counter()
    tool = Tool(args.tool_rev, tuple(args.tool_args.split()) if args.tool_args else ())
    baseline = Tool(args.baseline_rev) if args.baseline_rev else None
    env = AuditEnv(os.path.abspath(args.venv))
    env.ensure()
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    plugin_dir = os.path.join(scratch, "_plugin")
    os.makedirs(plugin_dir, exist_ok=True)
    shutil.copy2(PLUGIN_SOURCE, os.path.join(plugin_dir, PLUGIN_MODULE + ".py"))
    ctx = Context(env=env, tool=tool, baseline=baseline, scratch=scratch, plugin_dir=plugin_dir,
                  keep_scratch=args.keep_scratch, tool_jobs=args.tool_jobs or os.cpu_count() or 1,
                  test_timeout=args.test_timeout, max_calls=args.max_calls,
                  files_per_target=args.files_per_target, max_runs=args.max_runs,
                  package_budget=args.package_budget)
    for pkg in args.selected:  # one pip at a time: installs share the environment
        ctx.installed[pkg.dist] = env.install_package(pkg)
    log(f"auditing {len(args.selected)} package(s) with loop2scan {tool.version} from {tool.describe}")
    machine, audit_env = machine_info(), env.versions()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    records: dict[str, dict] = {}

    def write(complete: bool) -> dict:
        """The result so far (rewritten after every package, so an interrupted run keeps what it did)."""
        packages = {p.dist: records[p.dist] for p in args.selected if p.dist in records}
        not_audited = {n: r["not_audited"] for n, r in packages.items() if r.get("not_audited")}
        total = totals(packages)
        met = targets_met(total)
        data = {
            "what": "loop2scan rewrite --write on JAX-ecosystem packages from PyPI; every rewrite executed beside "
                    "the original on the package's own tests",
            "complete": complete,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "finished": now_iso(),
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine,
            "audit_env": audit_env,
            "tool": tool.to_json(),
            "baseline": baseline.to_json() if baseline else None,
            "options": {"packages": [p.dist for p in args.selected], "jobs": args.jobs, "tool_jobs": ctx.tool_jobs,
                        "test_timeout": args.test_timeout, "max_calls": args.max_calls,
                        "files_per_target": args.files_per_target, "max_runs": args.max_runs,
                        "package_budget": args.package_budget},
            "total": total,
            "targets_met": met,
            "ok": all(ok for name, ok in met.items() if name in EXIT_TARGETS),
            "not_audited": not_audited,
            "packages": packages,
            "rewrites": [dict(package=n, **rw) for n, rec in packages.items() for rw in rec.get("rewrites", [])],
        }
        data = redact(data)
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, out)
        write_markdown(out, data)
        return data

    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(PackageAudit(p, ctx).run): p for p in args.selected}
        for future in cf.as_completed(futures):
            records[futures[future].dist] = future.result()
            write(complete=len(records) == len(args.selected))
    data = write(complete=True)
    total = data["total"]
    log(f"results: {os.path.relpath(out, REPO_ROOT)} and .md; {total['rewritten']} rewrites, "
        f"{total['executed']} executed ({total['equal']} equal, {total['different']} different, "
        f"{total['crashed']} crashed), {total['upstream_failures']} upstream failure(s), "
        f"{total['second_run_changed']} file(s) changed by the second run")
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
