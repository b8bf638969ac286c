"""Shared helpers of the benchmark suite: machine description, timing, results.

Nothing here imports jax, flax or loop2scan at module level, so the parts
that time the command line are not slowed down by it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Callable, Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def part_args(doc: str, workloads: bool = False) -> argparse.Namespace:
    """Command-line options of a part run on its own (``python benchmarks/<part>.py``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run: 1 repetition, fewer sizes")
    if workloads:
        ap.add_argument("--workload", action="append", metavar="NAME",
                        help="only this registered workload (repeatable)")
    args = ap.parse_args()
    if workloads:
        check_workloads(ap, args.workload)
    return args


def check_workloads(ap: argparse.ArgumentParser, names: Sequence[str] | None) -> None:
    """A usage error (exit 2) for a ``--workload`` that is not registered."""
    import workloads as registry

    registered = [w.name for w in registry.WORKLOADS]
    for name in names or []:
        if name not in registered:
            ap.error(f"unknown workload {name!r}; registered: {', '.join(registered)}")


# --------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _os_name() -> str:
    pretty = None
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    kernel = f"{platform.system()} {platform.release()} {platform.machine()}"
    return f"{pretty} ({kernel})" if pretty else kernel


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def source_revision() -> dict:
    """The commit of the working tree and whether loop2scan's sources differ from it (read-only git calls)."""
    out: dict = {"commit": None, "local_changes": None}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "loop2scan", "codemods"], cwd=REPO_ROOT,
                                  capture_output=True, timeout=10)
            out["local_changes"] = diff.returncode != 0
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def machine_info() -> dict:
    """The machine and the software versions (no local paths)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": _os_name(),
        "versions": {d: _version(d) for d in ("loop2scan", "jax", "jaxlib", "flax", "libcst", "click", "numpy")},
        "loop2scan_source": source_revision(),
    }


def machine_line(m: dict) -> str:
    v = m["versions"]
    rev = m.get("loop2scan_source") or {}
    commit = f" (commit {rev['commit'][:10]}{', with local changes' if rev.get('local_changes') else ''})" \
        if rev.get("commit") else ""
    return (f"{m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, "
            f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, libcst {v.get('libcst')}, "
            f"loop2scan {v.get('loop2scan')}{commit}")


# --------------------------------------------------------------------------- timing

def stats(values: Sequence[float]) -> dict:
    vals = [float(v) for v in values]
    return {
        "best": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
        "n": len(vals),
        "all": vals,
    }


def timed_run(cmd: Sequence[str], *, ok_codes=(0,), env: dict | None = None, cwd: str | None = None,
              capture: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd`` and return (wall seconds, completed process); raise on an unexpected exit code."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time (user + system) of the command and every process it waited for
    proc.cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(_redact(c) for c in cmd[:3])} ... exited {proc.returncode}:\n"
                           f"{(proc.stderr or '')[-3000:]}")
    return wall, proc


def repeat(fn: Callable[[], float], n: int) -> list[float]:
    return [fn() for _ in range(n)]


# --------------------------------------------------------------------------- tools

def loop2scan_command() -> list[str]:
    """The ``loop2scan`` console script of the running interpreter's environment
    (what a user or a pre-commit hook runs), else ``python -m loop2scan``.
    loop2scan's modules are compiled to bytecode first, as an installed package's
    are (:func:`compile_bytecode`)."""
    compile_bytecode()
    bindir = os.path.dirname(sys.executable)
    exe = shutil.which("loop2scan", path=bindir)
    if exe:
        return [exe]
    return [sys.executable, "-m", "loop2scan"]


_COMPILED = False


def compile_bytecode() -> None:
    """Compile loop2scan's packages to bytecode (``__pycache__``), once per
    benchmark process.  pip does this when it installs a package, so the
    packages timed against loop2scan (libcst, jax) start from bytecode; an
    editable install writes it on first import, except where
    ``PYTHONDONTWRITEBYTECODE`` is set, and then every run would compile
    loop2scan's sources again (about 0.1 s of each command's start)."""
    global _COMPILED
    if _COMPILED:
        return
    import compileall
    import importlib.util

    for package in ("loop2scan", "loop2scan_codemods"):
        spec = importlib.util.find_spec(package)
        for directory in (spec.submodule_search_locations or []) if spec is not None else []:
            compileall.compile_dir(directory, quiet=1)
    _COMPILED = True


def loop2scan_command_name() -> str:
    cmd = loop2scan_command()
    return "loop2scan (console script)" if len(cmd) == 1 else "python -m loop2scan"


def bench_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- results

def _redact(text: str) -> str:
    """Replace local directories in ``text`` by neutral placeholders."""
    if not isinstance(text, str):
        return text
    subs = []
    for prefix, name in ((REPO_ROOT, "<repo>"), (sys.prefix, "<env>"), (sys.base_prefix, "<python>"),
                         (os.path.expanduser("~"), "<home>")):
        if prefix and len(prefix) > 1:
            subs.append((prefix, name))
    import tempfile
    subs.append((tempfile.gettempdir(), "<tmp>"))
    for prefix, name in sorted(subs, key=lambda s: -len(s[0])):
        text = text.replace(prefix, name)
    return text


def redact(obj):
    if isinstance(obj, str):
        return _redact(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def write_result(name: str, data: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(redact(data), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_result(name: str) -> dict | None:
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def snapshot(root: str) -> dict[str, bytes]:
    """Every regular file under ``root`` (not following links): relative path -> bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_jax_worker(cmd: Sequence[str], cwd: str, timeout_s: float) -> dict:
    """Run a benchmark worker (a fresh process, JAX on the CPU, no compilation
    cache); its last stdout line is its JSON result, ``process_s`` is added.
    A failure is ``{"error": ...}``."""
    env = bench_env(JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false", TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=cwd, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def min_median(values: Sequence[float]) -> dict | None:
    """``{"min", "median", "n"}`` of the values (``None`` for none)."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "n": len(values)}


def result_header(name: str, quick: bool, load_before: Sequence[float], t_start: float) -> dict:
    """The keys every part's result starts with: what ran, when, where, under what load."""
    return {"benchmark": name, "date": now_iso(), "quick": quick, "machine": machine_info(),
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
            "elapsed_s": time.perf_counter() - t_start}
