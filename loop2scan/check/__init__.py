"""``--check``: run each rewrite before and after on the device and compare.

This part runs in the loop2scan process and imports no framework: it matches
the rewritten loops of a file with the examples declared in
``[tool.loop2scan.examples]``, hands them to a worker process
(``python -m loop2scan.check.worker``, which imports the framework backend),
and turns the worker's measurements into one verdict per rewrite:

* ``verified``  outputs, gradients and state agree within the tolerances;
* ``DIFFERS``   they do not, or the rewritten code fails where the original
  runs; the report names what differs and the likely cause;
* ``unverified`` nothing could be compared (no example, the factory raised,
  the framework is not installed...), with the reason.

The example table (``pyproject.toml``)::

    [tool.loop2scan.examples]
    # "<file>::<function or Class.method>" = "<file>::<factory>"  (paths relative to pyproject.toml)
    "models/rnn.py::rnn" = "models/rnn.py::example_inputs"
    "models/mlp.py::mlp" = { factory = "tests/factories.py::mlp_args", rtol = 1e-4 }

A factory returns the positional arguments as a tuple, or a dict with
``args``, ``kwargs`` and, for a method, ``self``; a factory with a parameter
named ``module`` receives the (original) module of the target (the Flax NNX
and torch_xla backends call it with the rewritten module too, and give the
rewritten model the original's weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

from ..plan import LoopResult


@dataclass
class Example:
    file: str  # relative to the config root, POSIX
    target: str  # qualname: "rnn", "Model.__call__"
    factory: str  # "file.py::name" or "package.module:name"
    rtol: Optional[float] = None
    atol: Optional[float] = None


@dataclass
class CheckOptions:
    device: str = "default"  # "default": the framework's default device; "cpu": force the CPU
    rtol: Optional[float] = None
    atol: Optional[float] = None
    timeout: float = 900.0


class ExampleConfigError(ValueError):
    pass


def parse_examples(table: dict, source: str = "[tool.loop2scan.examples]") -> list[Example]:
    out = []
    for key, value in table.items():
        if "::" not in key:
            raise ExampleConfigError(f"{source}: key {key!r} must be \"<file>::<function or Class.method>\"")
        file, target = key.split("::", 1)
        options: dict = {}
        if isinstance(value, str):
            factory = value
        elif isinstance(value, dict) and isinstance(value.get("factory"), str):
            factory = value["factory"]
            options = {k: v for k, v in value.items() if k != "factory"}
            unknown = set(options) - {"rtol", "atol"}
            if unknown:
                raise ExampleConfigError(f"{source}: unknown option(s) {sorted(unknown)} for {key!r}")
        else:
            raise ExampleConfigError(f"{source}: {key!r} must map to a factory string or a table with `factory`")
        if "::" not in factory and ":" not in factory:
            raise ExampleConfigError(f"{source}: factory {factory!r} must be \"<file>::<name>\" or "
                                     "\"<module>:<name>\"")
        out.append(Example(file.replace("\\", "/").lstrip("./") if file.startswith("./") else file.replace("\\", "/"),
                           target, factory, options.get("rtol"), options.get("atol")))
    return out


def _covers(target: str, function: str) -> bool:
    """An example of ``target`` exercises the loops of ``function`` (the same
    function, or a function nested in it)."""
    return function == target or function.startswith(target + ".")


def check_loops(path: str, original_text: str, new_text: str, loops: list[LoopResult], framework: str,
                examples: list[Example], root: Optional[str], options: CheckOptions) -> dict[int, dict]:
    """Verify the rewritten loops of one file.  Returns ``{loop line: check dict}``."""
    rewritten = [lp for lp in loops if lp.status == "rewritten" and lp.plan is not None]
    results: dict[int, dict] = {}
    root = root or os.getcwd()
    rel = os.path.relpath(os.path.abspath(path), root).replace(os.sep, "/")
    mine = [e for e in examples if os.path.normpath(e.file) == os.path.normpath(rel)]
    jobs: dict[str, dict] = {}
    for loop in rewritten:
        plan = loop.plan
        covering = [e for e in mine if _covers(e.target, plan.function)]
        if not covering:
            results[loop.line] = _unverified(
                f"no example exercises `{plan.function}`: declare one in [tool.loop2scan.examples], e.g. "
                f"\"{rel}::{plan.function}\" = \"<file>::<factory>\"")
            continue
        ex = covering[0]
        job = jobs.setdefault(ex.target, {"target": ex.target, "factory": ex.factory, "rtol": ex.rtol,
                                          "atol": ex.atol, "loops": [], "layout_params": [],
                                          "dtype_variants": []})
        if plan.dtype_assumed and framework != "torch_xla" and "bfloat16" not in job["dtype_variants"]:
            # a carry's dtype is not visible: run the example in bfloat16 too (docs/assumptions.md)
            job["dtype_variants"].append("bfloat16")
        if plan.modules is not None or plan.cells:
            # NNX modules: the model is built anew from the rewritten module, the state copied (flax_backend)
            job["modules"] = True
        job["loops"].append({
            "line": loop.line,
            "function": plan.function,
            "carries": list(plan.carries),
            "carry_inits": _carry_inits(original_text, plan),
            # a loop over torch layers: `scan_layers` runs layer 0's code, so their attributes are compared
            "torch_layers": plan.torch_layers.attr if plan.torch_layers is not None else None,
        })
        # a parameter list whose layout changed: the example's argument is converted
        if plan.layout is not None and plan.layout.mode == "stacked" and plan.function == ex.target \
                and plan.layout.name not in job["layout_params"]:
            job["layout_params"].append(plan.layout.name)
    if not jobs:
        return results
    spec = {
        "path": os.path.abspath(path),
        "root": os.path.abspath(root),
        "rewritten": new_text,
        "framework": "jax" if framework == "flax" else framework,  # array loops of a Flax file
        "device": options.device,
        "rtol": options.rtol,
        "atol": options.atol,
        "examples": list(jobs.values()),
    }
    outcome = _run_worker(spec, options)
    if "error" in outcome:
        for job in jobs.values():
            for lp in job["loops"]:
                results[lp["line"]] = _unverified(outcome["error"])
        return results
    by_target = {r["target"]: r for r in outcome["examples"]}
    for job in jobs.values():
        r = by_target.get(job["target"], {"verdict": "unverified", "reason": "the check produced no result"})
        for lp in job["loops"]:
            results[lp["line"]] = dict(r, example=f"{rel}::{job['target']}")
    return results


def _carry_inits(text: str, plan) -> dict:
    """What each carry starts as, to explain a carry whose type changes."""
    import ast

    out: dict = {}
    try:
        tree = ast.parse(text)
    except SyntaxError:  # pragma: no cover - the file parsed before
        return out
    loop_line = plan.loop.line
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and getattr(node, "value", None) is not None \
                and node.lineno < loop_line:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id in plan.carries:
                    prev = out.get(t.id)
                    if prev is None or prev["line"] < node.lineno:
                        out[t.id] = {"line": node.lineno, "text": ast.get_source_segment(text, node.value) or ""}
    return out


def _unverified(reason: str) -> dict:
    return {"verdict": "unverified", "reason": reason}


def _run_worker(spec: dict, options: CheckOptions) -> dict:
    env = dict(os.environ)
    if options.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["PJRT_DEVICE"] = "CPU"
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        proc = subprocess.run([sys.executable, "-m", "loop2scan.check.worker"], input=json.dumps(spec),
                              capture_output=True, text=True, timeout=options.timeout, env=env,
                              cwd=spec["root"])
    except subprocess.TimeoutExpired:
        return {"error": f"the check did not finish within {options.timeout:.0f} s"}
    except OSError as e:
        return {"error": f"could not start the check: {e}"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    # The result line is written last, once every example has run: a process
    # that ends abnormally after writing it (a runtime's threads aborting at
    # exit) has still finished its comparisons.
    if isinstance(result, dict) and "examples" in result:
        return result
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the check process failed: {tail}"}
    if result is None:
        return {"error": "the check process wrote an unreadable result"}
    return result


@dataclass
class Summary:
    verified: int = 0
    differs: int = 0
    unverified: int = 0
    lines: list[str] = field(default_factory=list)


def describe(check: dict) -> str:
    """One line for the text report."""
    verdict = check.get("verdict")
    if verdict == "unverified":
        return f"unverified: {check.get('reason', '')}"
    parts = []
    if check.get("device"):
        parts.append(f"on {check['device']}")
    if check.get("mode"):
        parts.append(f"in {check['mode']} mode")
    out = check.get("outputs")
    if out:
        parts.append(f"outputs max abs {out['max_abs']:.1e}, rel {out['max_rel']:.1e}")
    grads = check.get("gradients")
    if grads:
        parts.append(f"gradients max abs {grads['max_abs']:.1e}, rel {grads['max_rel']:.1e}")
    elif check.get("gradients_note"):
        parts.append(check["gradients_note"])
    for dtype, outcome in (check.get("dtypes") or {}).items():
        parts.append(f"{dtype} inputs: {outcome}")
    first = check.get("first_call_s")
    if first and first.get("before") is not None and first.get("after") is not None:
        parts.append(f"first call {_sec(first['before'])} -> {_sec(first['after'])}")
    comp = check.get("compile_s")
    if comp and comp.get("before") is not None and comp.get("after") is not None:
        parts.append(f"compile {_sec(comp['before'])} -> {_sec(comp['after'])}")
    run = check.get("run_s")
    if run and run.get("before") is not None and run.get("after") is not None:
        parts.append(f"run {_sec(run['before'])} -> {_sec(run['after'])}")
    eager = check.get("eager") or {}
    if eager.get("before") and eager.get("after"):
        b, a = eager["before"], eager["after"]
        parts.append(f"eager call {_sec(b['repeat_call_s'])} -> {_sec(a['repeat_call_s'])} "
                     f"({_compiles(b)} -> {_compiles(a)} compiles per call)")
    if verdict == "differs":
        diffs = "; ".join(check.get("differences", [])[:3]) or check.get("reason", "")
        return f"DIFFERS: {diffs}" + (f" ({', '.join(parts)})" if parts else "")
    return "verified " + ", ".join(parts)


def _compiles(timing: dict) -> str:
    n = timing["compiles_per_repeat_call"]
    return f"{n:g}"


def _sec(x: float) -> str:
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"
