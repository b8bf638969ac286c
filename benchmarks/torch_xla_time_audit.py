"""PyTorch/XLA time-loop audit: find real code where ``--framework torch_xla`` rewrites a loop, and execute it.

The transformers audit (``torch_xla_audit.py``) found no time loop the
torch_xla target rewrites into ``torch_xla.experimental.scan.scan``.  This
script looks for them in other public PyTorch packages and executes every
rewrite it finds, original against rewritten.

1. **Source.**  Each installed package of ``PACKAGES`` (its ``.py`` files;
   ``torch`` without its tests and ``torch/testing``; ``transformers`` without
   ``models/*/modeling_*.py``, which the transformers audit covers) is copied
   to ``build/torch-xla-time-audit/<dist>-<version>/`` next to a minimal
   ``pyproject.toml`` (``[project]`` and an empty ``[tool.loop2scan]``): a
   project of its own, whose whole package the analysis sees.
2. **Rewrite.**  loop2scan (a snapshot of this working tree's ``loop2scan/``
   and ``codemods/`` taken at the start) previews ``rewrite --framework
   torch_xla --format json --jobs 2 <top package>`` over each copy.  Loops are
   counted by status and code; every ``rewritten`` loop is listed with its
   target (``scan``: a time loop; ``scan_layers``: a layer list).
3. **Execute.**  For every rewrite (a random sample of ``SAMPLE`` with seed
   ``SEED`` when there are more) the rewritten module is produced with
   ``rewrite --write --stdin-filename PATH -`` (the copy is never changed).  A
   worker process (this script with ``--worker``, ``PJRT_DEVICE=CPU``)
   imports the installed module, loads the rewritten source beside it in the
   same package (relative imports resolve), builds the object holding the
   loop from ``HARNESSES`` (a constructor and inputs per rewrite, written by
   hand: these packages have no common configuration class), loads the
   original's ``state_dict`` into the rewritten one, and runs both on
   ``torch_xla.device()`` in eval mode on the same random inputs; then the
   gradients of a fixed random projection of the floating outputs with
   respect to every parameter and every floating input; one
   ``torch_xla.sync()``, then everything is read back and compared (float32:
   ``rtol=1e-4, atol=1e-5``, gradients 10x; the buffers after the call too).
   Verdict per rewrite: ``equal``, ``different``, ``crashed`` (the rewrite
   raises where the original runs) or ``could-not-build`` (no harness, or the
   original itself does not run: with the reason).
4. **Self-test.**  The same pipeline first runs on a generated fixture
   package (a GRU cell stepped over time, the README's example, that the tool
   rewrites), and on two sabotaged copies of its rewrite (one computing
   something else, one raising): they must come out ``equal``, ``different``
   and ``crashed``.

Results: ``benchmarks/results/torch_xla_time_audit.json`` and
``torch_xla_time_audit.md`` (paths relative to each package's root; no local
path is written).  Exit status 1 when a rewrite is ``different`` or
``crashed`` or the self-test fails.

Needs ``torch==2.9.0`` and ``torch_xla==2.9.0`` (the ``torch-xla`` extra);
the packages are optional, each audited when installed::

    pip install 'torch==2.9.0' torchaudio==2.9.0 torchvision==0.24.0 timm diffusers x-transformers transformers \\
        pytorch-tcn torchdiffeq torchcde torchsde ncps gpytorch pyro-ppl pytorch-crf torch-struct lstm \\
        lstm-variants mingru-pytorch sru norse snntorch torchode

    .venv/bin/python benchmarks/torch_xla_time_audit.py                 # everything
    .venv/bin/python benchmarks/torch_xla_time_audit.py --only ncps     # one package (repeatable)
    .venv/bin/python benchmarks/torch_xla_time_audit.py --no-execute    # the tool only
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch_xla_audit as txa
from common import REPO_ROOT, RESULTS_DIR, log, machine_info, now_iso, redact
from real_audit import last_error_line

BUILD_DIR = os.path.join(REPO_ROOT, "build")
SCRATCH = os.path.join(BUILD_DIR, "torch-xla-time-audit")
TOOL_SNAPSHOT = os.path.join(BUILD_DIR, "torch-xla-time-audit-tool")
RESULT_NAME = "torch_xla_time_audit"
JOBS = 2
SAMPLE, SEED = 25, 0

# the helpers of the transformers audit, pointed at this script's directories
txa.SCRATCH = SCRATCH
txa.TOOL_SNAPSHOT = TOOL_SNAPSHOT

#: (distribution, top module, excluded directories relative to the package root, excluded glob of files)
PACKAGES = (
    ("torch", "torch", ("torch/testing", "torch/test"), None),
    ("torchvision", "torchvision", (), None),
    ("torchaudio", "torchaudio", (), None),
    ("timm", "timm", (), None),
    ("diffusers", "diffusers", (), None),
    ("x-transformers", "x_transformers", (), None),
    ("transformers", "transformers", (), "transformers/models/*/modeling_*.py"),
    ("pytorch-tcn", "pytorch_tcn", (), None),
    ("torchdiffeq", "torchdiffeq", (), None),
    ("torchcde", "torchcde", (), None),
    ("torchsde", "torchsde", (), None),
    ("ncps", "ncps", (), None),
    ("gpytorch", "gpytorch", (), None),
    ("linear-operator", "linear_operator", (), None),
    ("pyro-ppl", "pyro", (), None),
    ("pytorch-crf", "torchcrf", (), None),
    ("torch-struct", "torch_struct", (), None),
    ("lstm", "lstm", (), None),
    ("lstm-variants", "lstm_variants", (), None),
    ("mingru-pytorch", "minGRU_pytorch", (), None),
    ("sru", "sru", (), None),
    ("norse", "norse", (), None),
    ("snntorch", "snntorch", (), None),
    ("torchode", "torchode", (), None),
)
TEST_DIRS = {"test", "tests"}
GENERIC_EXCLUDED = ("test/ and tests/ folders", "test_*.py files")
#: The codes of time loops the torch_xla target declines (not in a form its scan takes; effects in the body).
TIME_CODES = ("L2S335", "L2S336")

# --------------------------------------------------------------------------- sources and the tool


def copy_package(top: str, dist: str, version: str, exclude_dirs: tuple, exclude_glob: str | None) -> str:
    """A project holding a copy of the installed package ``top`` (``.py`` files, tests left out); its root."""
    import fnmatch
    import importlib.util

    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no package {top}")
    src = os.path.abspath(list(spec.submodule_search_locations)[0])
    root = os.path.join(SCRATCH, f"{dist}-{version}")
    shutil.rmtree(root, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(src):
        reldir = os.path.relpath(dirpath, os.path.dirname(src))
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and d not in TEST_DIRS
                             and os.path.join(reldir, d) not in exclude_dirs)
        for name in filenames:
            rel = os.path.join(reldir, name)
            if not name.endswith(".py") or name.startswith("test_") or \
                    (exclude_glob and fnmatch.fnmatch(rel, exclude_glob)):
                continue
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            shutil.copy2(os.path.join(dirpath, name), os.path.join(root, rel))
    with open(os.path.join(root, "pyproject.toml"), "w", encoding="utf-8") as f:
        f.write(f'[project]\nname = "{dist}"\nversion = "{version}"\n\n[tool.loop2scan]\n')
    return root


def audit_package(dist: str, top: str, exclude_dirs: tuple, exclude_glob: str | None, titles: dict) -> dict:
    """The tool over one package: counts, the rewrites."""
    version = txa.installed_version(dist)
    if version is None:
        return {"dist": dist, "status": "not installed"}
    t0 = time.perf_counter()
    try:
        root = copy_package(top, dist, version, exclude_dirs, exclude_glob)
    except Exception as e:  # noqa: BLE001
        return {"dist": dist, "version": version, "status": f"not copied: {txa._short_exc(e)}"}
    code, out, err, secs = txa.loop2scan(["rewrite", "--framework", "torch_xla", "--format", "json", "--jobs",
                                          str(JOBS), top], cwd=root)
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        return {"dist": dist, "version": version, "status": f"exit {code}: {last_error_line(err or out)}"}
    excluded = [*(f"{d}/" for d in exclude_dirs), *GENERIC_EXCLUDED]
    if exclude_glob:
        excluded.append(exclude_glob)
    rec: dict[str, Any] = {"dist": dist, "version": version, "status": "audited", "root": root,
                           "command": f"loop2scan rewrite --framework torch_xla --format json --jobs 2 {top}",
                           "excluded": excluded, "tool_exit": code, "tool_seconds": round(secs, 1)}
    rec.update(txa.summarize(report, root))
    rec["time_loop_declines"] = [
        {"file": f["path"], "line": lp["line"], "code": lp["code"], "pattern": txa.pattern(lp["message"]),
         "message": lp["message"]}
        for f in report["files"] for lp in f["loops"] if lp["status"] == "declined" and lp["code"] in TIME_CODES]
    rec.pop("layer_loop_list", None)
    rec.pop("layer_loops", None)
    for rw in rec["rewrite_list"]:
        rw["dist"] = dist
        rw["kind"] = "time loop" if str(rw.get("target", "")).endswith("scan.scan") else (
            "scan_layers" if "scan_layers" in str(rw.get("target", "")) else str(rw.get("target")))
    rec["time_loop_rewrites"] = sum(1 for rw in rec["rewrite_list"] if rw["kind"] == "time loop")
    rec["scan_layers_rewrites"] = sum(1 for rw in rec["rewrite_list"] if rw["kind"] == "scan_layers")
    rec["titles"] = {c: titles.get(c, "") for c in rec["by_code"]}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


# --------------------------------------------------------------------------- harnesses
#
# Key: "<file relative to the package root>:<line of the loop>".  Every entry gives
#   build:  expression giving the object holding the loop, with `C` the class (original or rewritten), `torch`
#           and `dev` (the XLA device); a torch module is then moved to `dev`, put in eval mode and given the
#           original's state_dict; any other object gets its tensor attributes moved to `dev`
#   calls:  [(label, method, inputs)]: each method is called with the inputs, an expression giving (args, kwargs)
#           on the CPU with `torch` and `g` (a seeded torch.Generator); floating inputs get gradients
#   via:    "scan_layers of transformers": executed by the transformers audit's worker instead (its spot check)
HARNESSES: dict[str, dict] = {
    # SynthID watermarking: `update_scores` folds the watermark's depth axis into the probabilities (a float
    # carry, int64 g-values stepped through), `accumulate_hash` a linear congruential hash over the last axis
    # (an int64 carry: the README says carries must be floating-point).  `__call__` runs both on real data.
    "transformers/generation/logits_process.py:2743": dict(
        build="C(ngram_len=5, keys=[654, 400, 836, 123, 340, 443, 597, 160, 57, 29], sampling_table_size=2**16, "
              "sampling_table_seed=0, context_history_size=64, device='cpu')",
        calls=[
            ("update_scores, int64 g-values (as `__call__` passes them)", "update_scores",
             "((torch.randn(2, 40, generator=g), torch.randint(0, 2, (2, 40, 10), generator=g)), {})"),
            ("update_scores, float g-values", "update_scores",
             "((torch.randn(2, 40, generator=g), torch.randint(0, 2, (2, 40, 10), generator=g).float()), {})"),
            ("__call__", "__call__",
             "((torch.randint(0, 40, (2, 12), generator=g), torch.randn(2, 40, generator=g)), {})"),
        ]),
    "transformers/generation/logits_process.py:2846": dict(
        build="C(ngram_len=5, keys=[654, 400, 836, 123, 340, 443, 597, 160, 57, 29], sampling_table_size=2**16, "
              "sampling_table_seed=0, context_history_size=64, device='cpu')",
        calls=[
            ("accumulate_hash, int64 (as the class calls it)", "accumulate_hash",
             "((torch.zeros(2, 40, dtype=torch.long), torch.randint(0, 40, (2, 40, 4), generator=g)), {})"),
            ("compute_ngram_keys", "compute_ngram_keys",
             "((torch.randint(0, 40, (2, 7, 5), generator=g),), {})"),
            ("__call__", "__call__",
             "((torch.randint(0, 40, (2, 12), generator=g), torch.randn(2, 40, generator=g)), {})"),
        ]),
    "transformers/models/wavtokenizer/modular_wavtokenizer.py:235": dict(via="scan_layers of transformers"),
}
# the transformers audit's worker builds the modular file's class as it builds the modeling file's
txa.SPOT_CHECKS["transformers/models/wavtokenizer/modular_wavtokenizer.py:WavTokenizerVocosBackbone"] = \
    txa.SPOT_CHECKS["transformers/models/wavtokenizer/modeling_wavtokenizer.py:WavTokenizerVocosBackbone"]


# --------------------------------------------------------------------------- execution (worker side)

def _to_device(obj, dev, torch):
    """A module moved to ``dev``; any other object with its tensor attributes moved (and ``device`` set)."""
    if isinstance(obj, torch.nn.Module):
        return obj.to(dev).eval()
    for name, value in list(vars(obj).items()):
        if isinstance(value, torch.Tensor):
            setattr(obj, name, value.to(dev))
        elif name == "device":
            setattr(obj, name, dev)
    return obj


def _call(obj, method, args, kwargs, torch):
    """Outputs, then gradients of a fixed random projection of the floating outputs w.r.t. every parameter and
    every floating input."""
    fn = getattr(obj, method)
    out = txa._tensors(fn(*args, **kwargs))
    floats = [(n, t) for n, t in out if t.is_floating_point() and t.requires_grad]
    wrt = [(f"input[{i}]", a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    wrt += [(f"input:{k}", v) for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    if isinstance(obj, torch.nn.Module):
        wrt += [(n, p) for n, p in obj.named_parameters() if p.requires_grad]
    grads = []
    if floats and wrt:
        g = torch.Generator().manual_seed(7)
        loss = sum((t * torch.randn(tuple(t.shape), generator=g).to(t.device, t.dtype)).sum() for _, t in floats)
        gs = torch.autograd.grad(loss, [w for _, w in wrt], allow_unused=True)
        grads = [(f"grad:{n}", gr) for (n, _), gr in zip(wrt, gs)]
    return out, grads


def _work(spec: dict) -> dict:
    import importlib

    import torch
    import torch_xla

    orig = importlib.import_module(spec["module"])
    try:
        new = txa._load_rewritten(orig, spec["rewritten_path"])
    except Exception as e:  # noqa: BLE001
        raise txa._Verdict("crashed", f"the rewritten module does not load: {txa._short_exc(e)}")

    def resolve(mod, qual):
        obj = mod
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj

    o_cls, n_cls = resolve(orig, spec["holder"]), resolve(new, spec["holder"])
    harness = spec["harness"]
    dev = torch_xla.device()
    try:
        torch.manual_seed(0)
        a = eval(harness["build"], {"C": o_cls, "torch": torch, "dev": dev})
        torch.manual_seed(1)
        b = eval(harness["build"], {"C": n_cls, "torch": torch, "dev": dev})
        if isinstance(a, torch.nn.Module):
            b.load_state_dict(a.state_dict(), strict=True)
    except Exception as e:  # noqa: BLE001
        raise txa._Verdict("could-not-build", f"`{harness['build']}`: {txa._short_exc(e)}")
    a, b = _to_device(a, dev, torch), _to_device(b, dev, torch)
    calls, pending = [], []
    for label, method, inputs in harness["calls"]:
        g = torch.Generator().manual_seed(0)
        args, kwargs = eval(inputs, {"torch": torch, "g": g})

        def prep(t):
            if not isinstance(t, torch.Tensor):
                return t
            t = t.to(dev)
            return t.requires_grad_() if t.is_floating_point() else t

        rec: dict[str, Any] = {"call": label, "inputs": inputs}
        args_a = tuple(prep(x) for x in args)
        kwargs_a = {k: prep(v) for k, v in kwargs.items()}
        args_b = tuple(prep(x) for x in args)
        kwargs_b = {k: prep(v) for k, v in kwargs.items()}
        try:
            res_a = _call(a, method, args_a, kwargs_a, torch)
        except Exception as e:  # noqa: BLE001
            rec.update(verdict="could-not-build", reason=f"the original `{method}` does not run: {txa._short_exc(e)}")
            calls.append(rec)
            continue
        try:
            res_b = _call(b, method, args_b, kwargs_b, torch)
        except Exception as e:  # noqa: BLE001
            rec.update(verdict="crashed", reason=f"the rewritten `{method}` raises: {txa._short_exc(e)}")
            calls.append(rec)
            continue
        calls.append(rec)
        pending.append((rec, res_a, res_b))
    try:
        torch_xla.sync()
    except Exception as e:  # noqa: BLE001 - a failure of the graph: blame neither side's call in particular
        for rec, _, _ in pending:
            rec.update(verdict="crashed", reason=f"torch_xla.sync() raises: {txa._short_exc(e)}")
        pending = []
    for rec, (out_a, grads_a), (out_b, grads_b) in pending:
        try:
            cpu = (lambda pairs: [(n, None if t is None else t.detach().cpu()) for n, t in pairs])
            out_a, out_b, grads_a, grads_b = cpu(out_a), cpu(out_b), cpu(grads_a), cpu(grads_b)
        except Exception as e:  # noqa: BLE001
            rec.update(verdict="crashed", reason=f"reading the results back raises: {txa._short_exc(e)}")
            continue
        d1, e1, _, n1 = txa._compare(out_a, out_b, txa.RTOL, txa.ATOL)
        d2, e2, _, n2 = txa._compare(grads_a, grads_b, txa.RTOL * txa.GRAD_FACTOR, txa.ATOL * txa.GRAD_FACTOR)
        rec.update(outputs_compared=n1, gradients_compared=n2, max_abs_error=max(e1, e2))
        diffs = d1 + d2
        rec["verdict"] = "different" if diffs else "equal"
        if diffs:
            rec["reason"] = "; ".join(diffs[:5])
    # the rewrite's verdict: the worst of its calls (crashed, different, equal; could-not-build when none ran)
    ran = [c for c in calls if c["verdict"] != "could-not-build"]
    for v in ("crashed", "different", "equal"):
        if any(c["verdict"] == v for c in ran):
            first = next(c for c in ran if c["verdict"] == v)
            return {"verdict": v, "reason": first.get("reason", ""), "calls": calls}
    return {"verdict": "could-not-build", "reason": calls[0]["reason"] if calls else "no call", "calls": calls}


def _worker(spec_path: str) -> None:
    txa._worker(spec_path, _work)


# --------------------------------------------------------------------------- execution (parent side)

def rewritten_source_one(root: str, rel: str, line: int) -> tuple[str | None, str]:
    """The text of ``rel`` with only the loop at ``line`` rewritten (``rewrite --write PATH:LINE`` on the copy,
    which is restored at once), or (None, why)."""
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        code, out, err, _ = txa.loop2scan(["rewrite", "--framework", "torch_xla", "--write", "-q", "--no-diff",
                                           f"{rel}:{line}"], cwd=root, timeout=600)
        with open(path, encoding="utf-8") as f:
            new = f.read()
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    if new == text:
        return None, f"exit {code}: nothing rewritten: {last_error_line(err or out)}"
    return new, ""


def execute(rw: dict, root: str, top: str, work: str, extra_path: str | None = None,
            rewritten_text: str | None = None, harness: dict | None = None) -> dict:
    """Run the original and the rewritten version of the object holding a rewrite; the verdict."""
    rel = rw["file"]
    harness = harness or HARNESSES.get(f"{rel}:{rw['line']}")
    if harness is None:
        return {"verdict": "could-not-build", "reason": "no harness written for this rewrite"}
    if harness.get("via") == "scan_layers of transformers":
        return txa.execute(rw, root, "", work)
    if rw.get("class") is None:
        return {"verdict": "could-not-build", "reason": "the loop is not in a method of a class"}
    if rewritten_text is None:
        rewritten_text, why = rewritten_source_one(root, rel, rw["line"])
        if rewritten_text is None:
            return {"verdict": "could-not-build", "reason": f"no rewritten source: {why}"}
    out_dir, rewritten_path = txa.write_rewritten(work, rel, rewritten_text)
    spec = {"module": rel[:-3].replace("/", ".").removesuffix(".__init__"), "rewritten_path": rewritten_path,
            "holder": rw["class"], "harness": harness, "line": rw["line"]}
    return txa.run_worker(spec, os.path.join(out_dir, f"{os.path.basename(rel)[:-3]}.{rw['line']}"), extra_path,
                          script=__file__, crashed="crashed")


# --------------------------------------------------------------------------- self-test

FIXTURE_PACKAGE = "l2s_txa_time_fixture"
FIXTURE_MODULE = '''\
import torch
from torch import nn


class GRU(nn.Module):
    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.cell = nn.GRUCell(d_in, hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        outs = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            outs.append(torch.tanh(h))
        return torch.stack(outs, dim=1), h
'''
FIXTURE_HARNESS = dict(build="C(3, 5)", calls=[
    ("forward", "__call__", "((torch.randn(2, 9, 3, generator=g), torch.randn(2, 5, generator=g)), {})")])


def self_test() -> dict:
    """The harness on a fixture GRU, its rewrite and two sabotaged copies: equal, different, crashed."""
    t0 = time.perf_counter()
    base = os.path.join(SCRATCH, "self-test")
    shutil.rmtree(base, ignore_errors=True)
    pkg = os.path.join(base, FIXTURE_PACKAGE)
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w", encoding="utf-8") as f:
        f.write("")
    with open(os.path.join(pkg, "gru.py"), "w", encoding="utf-8") as f:
        f.write(FIXTURE_MODULE)
    with open(os.path.join(base, "pyproject.toml"), "w", encoding="utf-8") as f:
        f.write(f'[project]\nname = "{FIXTURE_PACKAGE}"\nversion = "0"\n\n[tool.loop2scan]\n')
    rel = f"{FIXTURE_PACKAGE}/gru.py"
    text, why = txa.rewritten_source(base, rel)
    if text is None or "scan(" not in text:
        return {"passed": False, "reason": f"the fixture is not rewritten: {why}"}
    anchor = "torch.tanh(h)"
    if text.count(anchor) != 1:
        return {"passed": False, "reason": f"the rewrite has {text.count(anchor)} `{anchor}`: cannot sabotage it"}
    cases = {"as rewritten": (text, "equal"),
             "computes something else": (text.replace(anchor, "torch.tanh(h) * 1.5"), "different"),
             "raises": (text.replace(anchor, "torch.tanh(h).view(-1, 7, 3)"), "crashed")}
    rw = {"file": rel, "line": 12, "class": "GRU"}
    results = {}
    for name, (src, expected) in cases.items():
        res = execute(rw, base, FIXTURE_PACKAGE, os.path.join(base, "work", name.replace(" ", "-")),
                      extra_path=base, rewritten_text=src, harness=FIXTURE_HARNESS)
        results[name] = {"expected": expected, "verdict": res["verdict"], "reason": res.get("reason", "")}
    passed = all(r["verdict"] == r["expected"] for r in results.values())
    return {"passed": passed, "cases": results, "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- the audit


def time_loop_blockers(packages: list[dict]) -> list[dict]:
    """The time-loop declines (``TIME_CODES``) of every package, by message pattern, most common first."""
    table: dict[tuple[str, str], dict] = {}
    for rec in packages:
        for d in rec.get("time_loop_declines", []):
            row = table.setdefault((d["code"], d["pattern"]), {
                "code": d["code"], "pattern": d["pattern"], "loops": 0, "packages": collections.Counter(),
                "example": f"{rec['dist']} `{d['file']}:{d['line']}`: {d['message']}"})
            row["loops"] += 1
            row["packages"][rec["dist"]] += 1
    rows = sorted(table.values(), key=lambda r: (-r["loops"], r["code"], r["pattern"]))
    return [dict(r, packages=dict(r["packages"].most_common())) for r in rows]


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_markdown(data: dict) -> str:
    m, v, ex = data["machine"], data["versions"], data["execution"]
    L = ["# PyTorch/XLA time-loop audit: public PyTorch packages", "",
         f"{data['generated']}. {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, "
         f"torch {v.get('torch')}, torch_xla {v.get('torch_xla')}, libcst {v.get('libcst')}.",
         f"Tool: working tree snapshot (sources sha256 {data['tool']['sources_sha256_16']}, commit "
         f"{(data['tool']['commit'] or '?')[:10]}{', with local changes' if data['tool']['local_changes'] else ''}). "
         f"Run: `{data['command']}` ({data['seconds']:.0f} s in all).", ""]
    st = data.get("self_test")
    if st:
        cases = ", ".join(f"{k}: {c['verdict']}" for k, c in (st.get("cases") or {}).items())
        L += [f"Harness self-test (a generated GRU stepped over time, its rewrite and two sabotaged copies): "
              f"**{'passed' if st.get('passed') else 'FAILED'}** ({cases or st.get('reason')}).", ""]
    L += ["## Packages", "",
          "Each package is a copy of the installed one (`.py` files, tests left out), a project of its own "
          "(minimal `pyproject.toml`), previewed with `loop2scan rewrite --framework torch_xla --format json "
          "--jobs 2 <top package>`. *Time loops*: rewrites into `torch_xla.experimental.scan.scan`; "
          "*scan_layers*: into `torch_xla.experimental.scan_layers.scan_layers`.", "",
          "| package | version | left out | files | loops | rewritten | time loops | scan_layers | declined | "
          "time loops declined (L2S335/L2S336) | not a candidate | file errors | seconds |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = collections.Counter()
    for r in data["packages"]:
        if r.get("status") != "audited":
            L.append(f"| {r['dist']} | {r.get('version', '-')} | {_md(r.get('status'))} | | | | | | | | | | |")
            continue
        bs = r["by_status"]
        tl = r.get("time_loop_declined", 0)
        row = {"files": r["files"], "loops": r["loops"], "rewritten": bs.get("rewritten", 0),
               "time": r["time_loop_rewrites"], "layers": r["scan_layers_rewrites"],
               "declined": bs.get("declined", 0), "tl": tl, "nc": bs.get("not-candidate", 0),
               "err": len(r["errors"])}
        tot.update(row)
        excl = ", ".join(f"`{e}`" for e in r["excluded"] if e not in GENERIC_EXCLUDED)
        excl = f"tests, {excl}" if excl else "tests"
        L.append(f"| {r['dist']} | {r['version']} | {excl} | {row['files']} | {row['loops']} | {row['rewritten']} | "
                 f"{row['time']} | {row['layers']} | {row['declined']} | {tl} | {row['nc']} | {row['err']} | "
                 f"{r['tool_seconds']:.0f} |")
    L.append(f"| **all** | | | {tot['files']} | {tot['loops']} | {tot['rewritten']} | {tot['time']} | "
             f"{tot['layers']} | {tot['declined']} | {tot['tl']} | {tot['nc']} | {tot['err']} | |")
    sampled = (f"a random sample of {ex['chosen']} of {ex['rewrites']} (seed {data['sample']['seed']})"
               if ex["sampled"] else "every rewrite")
    L += ["", "## Execution", "",
          f"Executed: {sampled}, original against rewritten, on the XLA CPU device (`PJRT_DEVICE=CPU`), in eval "
          "mode: outputs, then gradients of a fixed random projection of the floating outputs w.r.t. every "
          "floating input and every parameter, one `torch_xla.sync()`, then compared on the CPU (float32: "
          f"rtol {data['tolerances']['rtol']:g}, atol {data['tolerances']['atol']:g}, gradients "
          f"{data['tolerances']['gradients']}). The rewritten module holds that one loop rewritten "
          "(`rewrite --write PATH:LINE`) and is loaded beside the installed original in the same package. A "
          "time-loop rewrite is called through every method listed (the method holding the loop, and the "
          "public entry point that reaches it); its verdict is the worst of its calls.", "",
          "| rewrites | executed | equal | different | crashed | could not build |",
          "|---:|---:|---:|---:|---:|---:|",
          f"| {ex['chosen']} | {ex['executed']} | {ex['equal']} | {ex['different']} | {ex['crashed']} | "
          f"{ex['could_not_build']} |", "",
          "### Rewrites", "",
          "| package | file:line | class.method | target | verdict | calls (verdict, max abs error) | seconds |",
          "|---|---|---|---|---|---|---:|"]
    for rw in data["rewrites"]:
        verdict = rw.get("verdict", "?") + (f": {_md(rw['reason'])}" if rw.get("reason") else "")
        if rw.get("calls"):
            calls = "; ".join(f"{_md(c['call'])}: {c['verdict']}"
                              + (f" ({c['max_abs_error']:.1e})" if c.get("max_abs_error") is not None else "")
                              for c in rw["calls"])
        else:
            err = rw.get("max_abs_error")
            calls = (f"{rw.get('called', '-')}: {rw.get('gradients_compared', 0)} gradients"
                     + (f" ({err:.1e})" if err is not None else ""))
        L.append(f"| {rw['dist']} | `{rw['file']}:{rw['line']}` | `{rw['class']}.{rw['method']}` | "
                 f"`{(rw.get('target') or '').rsplit('.', 1)[-1]}` | {verdict} | {calls} | {rw.get('seconds', '-')} |")
    if not data["rewrites"]:
        L.append("| (none) | | | | | | |")
    L += ["", "## Why time loops are declined", "",
          "Every time loop declined with `L2S335` (not in a form torch_xla's scan takes) or `L2S336` (the body "
          "changes state or calls code out of sight), over all packages, by message (quoted code elided); the 25 "
          "most common:", "",
          "| code | loops | message | packages | example |", "|---|---:|---|---|---|"]
    for row in data["time_loop_blockers"][:25]:
        pk = ", ".join(f"{k} {n}" for k, n in list(row["packages"].items())[:4])
        L.append(f"| {row['code']} | {row['loops']} | {_md(row['pattern'])} | {pk} | {_md(row['example'][:300])} |")
    return "\n".join(L) + "\n"


def sample(rewrites: list[dict]) -> tuple[list[dict], bool]:
    if len(rewrites) <= SAMPLE:
        return rewrites, False
    return sorted(random.Random(SEED).sample(rewrites, SAMPLE), key=lambda r: (r["dist"], r["file"], r["line"])), True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="DIST", help="only this distribution (repeatable)")
    ap.add_argument("--no-execute", action="store_true", help="the tool only: execute no rewrite")
    ap.add_argument("--no-self-test", action="store_true", help="skip the harness self-test")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return 0
    t0 = time.perf_counter()
    tool = txa.snapshot_tool()
    titles = txa.code_titles()
    data: dict[str, Any] = {"generated": now_iso(), "machine": machine_info(), "tool": tool,
                            "command": ".venv/bin/python benchmarks/torch_xla_time_audit.py"}
    if not args.no_self_test and not args.no_execute:
        log("self-test")
        data["self_test"] = self_test()
        log(f"  passed: {data['self_test']['passed']}")
    packages, rewrites = [], []
    for dist, top, excl, glob_ in PACKAGES:
        if args.only and dist not in args.only:
            continue
        rec = audit_package(dist, top, excl, glob_, titles)
        log(f"{dist} {rec.get('version', '')}: {rec.get('status')}, {rec.get('files', 0)} files, "
            f"{rec.get('loops', 0)} loops, {rec.get('rewrites', 0)} rewritten")
        packages.append(rec)
        rewrites += [dict(rw, root=rec["root"]) for rw in rec.get("rewrite_list", [])]
    chosen, sampled = sample(rewrites)
    work = os.path.join(SCRATCH, "rewritten")
    shutil.rmtree(work, ignore_errors=True)
    t1 = time.perf_counter()
    for rw in chosen:
        if args.no_execute:
            rw["verdict"] = "not executed"
            continue
        log(f"  executing {rw['dist']} {rw['file']}:{rw['line']} ({rw['class']}, {rw['kind']})")
        rw.update(execute(rw, rw["root"], rw["file"].split("/")[0], os.path.join(work, rw["dist"])))
        log(f"    {rw['verdict']}" + (f": {rw['reason']}" if rw.get("reason") else ""))
    verdicts = collections.Counter(rw.get("verdict") for rw in chosen)
    data["execution"] = {"rewrites": len(rewrites), "sampled": sampled, "chosen": len(chosen),
                         "executed": sum(verdicts[v] for v in ("equal", "different", "crashed")),
                         **{v.replace("-", "_"): verdicts.get(v, 0)
                            for v in ("equal", "different", "crashed", "could-not-build")},
                         "seconds": round(time.perf_counter() - t1, 1)}
    for rec in packages:
        rec.pop("root", None)
    for rw in rewrites:
        rw.pop("root", None)
    data["versions"] = {d: txa.installed_version(d) for d in ("torch", "torch_xla", "libcst", "click")}
    data["machine"] = {k: v for k, v in data["machine"].items() if k != "versions"}
    data["tolerances"] = {"rtol": txa.RTOL, "atol": txa.ATOL, "gradients": f"{txa.GRAD_FACTOR:g}x"}
    data["sample"] = {"size": SAMPLE, "seed": SEED}
    data["packages"] = packages
    data["rewrites"] = chosen
    data["time_loop_blockers"] = time_loop_blockers(packages)
    for rec in packages:  # the loops themselves are in the table above: keep the count
        rec["time_loop_declined"] = len(rec.pop("time_loop_declines", []))
    data["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(data, default=str)
    for root, name in sorted({TOOL_SNAPSHOT: "<tool>", SCRATCH: "<scratch>"}.items(), key=lambda r: -len(r[0])):
        text = text.replace(root, name)
    data = redact(json.loads(text))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.md"), "w", encoding="utf-8") as f:
        f.write(write_markdown(data))
    log(f"done in {data['seconds']} s: {data['execution']}")
    bad = data["execution"]["different"] + data["execution"]["crashed"]
    return 1 if bad or not data.get("self_test", {"passed": True})["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
