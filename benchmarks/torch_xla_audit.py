"""PyTorch/XLA audit: rewrite Hugging Face ``transformers`` with ``--framework torch_xla`` and execute every rewrite.

1. **Source.**  The installed ``transformers`` package (its ``.py`` files) is
   copied to ``build/torch-xla-audit/transformers-<version>/``, next to a
   minimal ``pyproject.toml`` (``[project]`` and an empty ``[tool.loop2scan]``),
   so that the copy is a project of its own, as a checkout of transformers is:
   the analysis sees the whole package (``modeling_layers.py``,
   ``masking_utils.py``, ...) and no configuration of this repository applies.
2. **Rewrite.**  loop2scan (a snapshot of this working tree's ``loop2scan/``
   and ``codemods/`` taken at the start, so every step uses the same tool)
   previews ``rewrite --framework torch_xla --format json --jobs 2`` over every
   ``transformers/models/*/modeling_*.py`` of the copy.  Loops are counted by
   status and code.  *Layer loops* are the loops iterating a list attribute of
   ``self`` (``self.layers``, ``self.layer[:n]``, ``enumerate(self.h)``,
   ``zip(self.blocks, ...)``, ``reversed(...)``) whose body calls the element,
   and every loop the tool rewrote or declined with ``L2S330``-``L2S334``; the
   *layer stacks* among them iterate ``self.layers``, ``self.layer``,
   ``self.h``, ``self.blocks``, ... (``STACK_ATTRS``: the decoder and encoder
   stacks).  For each declined loop the blockers are the report's
   ``blockers`` list (every blocker found, the first being the loop's code)
   when the report carries one, else the loop's one code; counted by code and
   by message pattern (the message with its quoted parts elided), with an
   example message each, and the loops held back by exactly one blocker.
3. **Execute.**  For every rewrite the rewritten module is produced with
   ``rewrite --write --stdin-filename PATH -`` (the new source on stdout; the
   copy is never changed).  A worker process (this script with ``--worker``,
   ``PJRT_DEVICE=CPU``) imports the installed module and loads the rewritten
   source beside it in the same package (relative imports resolve), builds
   the class holding the loop (or else a model class of the module containing
   it) from a tiny configuration (``configuration_X.py``'s config class found
   from the constructor's annotation or the model's ``config_class``, with
   generic sizes: hidden 32, 3 layers, 4 heads, intermediate 64, vocabulary
   99, 64 positions; ``SPOT_CHECKS`` adds what a class needs besides), loads
   the original's ``state_dict`` into the rewritten one, and runs both on
   ``torch_xla.device()`` in eval mode on the same random inputs; then the
   gradients of a random projection of the outputs with respect to every
   parameter; one ``torch_xla.sync()``, then everything is read back and
   compared (float32: ``rtol=1e-4, atol=1e-5``, gradients 10x), with the
   buffers after the call.  Verdict per rewrite: ``equal``, ``different``,
   ``crashed`` (the rewrite raises where the original runs) or
   ``could-not-build`` (no configuration, constructor or inputs found, or the
   original itself does not run: with the reason).
4. **Self-test.**  Before the audit the same pipeline runs on a generated
   fixture package (a config class and a decoder ``for layer in self.layers:
   h = layer(h, mask)`` that the tool rewrites), and on two sabotaged copies
   of its rewrite (one computing something else, one raising): they must come
   out ``equal``, ``different`` and ``crashed``.  Nothing of it is kept.
5. **Other packages.**  The tool alone (no execution) runs the same way over
   other installed PyTorch model packages (``OTHER_PACKAGES``: timm,
   x-transformers, diffusers; the whole package directory) when installed.

Results: ``benchmarks/results/torch_xla_audit.json`` and ``torch_xla_audit.md``
(paths relative to each package's root; no local path is written).  Exit
status 1 when a rewrite is ``different`` or ``crashed`` or the self-test fails.

Needs ``transformers`` (the ``bench`` extra) beside ``torch==2.9.0`` and
``torch_xla==2.9.0`` (the ``torch-xla`` extra); the other packages are
optional (``pip install timm x-transformers diffusers 'torch==2.9.0'``).

    .venv/bin/python benchmarks/torch_xla_audit.py                  # everything
    .venv/bin/python benchmarks/torch_xla_audit.py --no-others      # transformers only
    .venv/bin/python benchmarks/torch_xla_audit.py --self-test      # the harness on its fixture only

    .venv/bin/python benchmarks/torch_xla_audit.py --no-self-test   # skip the self-test (about a minute)

Duration on 2 cores: about 3 minutes (the self-test about 70 s, three worker
processes; copying and previewing transformers about 20 s; each executed
rewrite about 30 s, mostly starting torch_xla and XLA compilation; the other
packages about 35 s).
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO_ROOT, RESULTS_DIR, log, machine_info, now_iso, redact  # noqa: E402
from real_audit import last_error_line, run_cmd  # noqa: E402

BUILD_DIR = os.path.join(REPO_ROOT, "build")
SCRATCH = os.path.join(BUILD_DIR, "torch-xla-audit")
TOOL_SNAPSHOT = os.path.join(BUILD_DIR, "torch-xla-audit-tool")
RESULT_NAME = "torch_xla_audit"
JOBS = 2

#: Other installed PyTorch model packages the tool (not the execution) runs over: (distribution, top module).
OTHER_PACKAGES = (("timm", "timm"), ("x-transformers", "x_transformers"), ("diffusers", "diffusers"))

#: Attributes holding the main stack of a model (decoder or encoder layers).
STACK_ATTRS = {"layers", "layer", "h", "blocks", "block", "resblocks", "decoder_layers", "encoder_layers",
               "hidden_layers", "transformer_blocks", "layer_list"}
#: The codes of loops over lists of torch layers (``loop2scan/analysis/checks/torch_layers.py``).
LAYER_CODES = ("L2S330", "L2S331", "L2S332", "L2S333", "L2S334")

#: Tiny configurations: exact attribute names, then suffixes; a value only ever shrinks.
TINY_EXACT = {
    "vocab_size": 99, "max_position_embeddings": 64, "n_positions": 64, "n_ctx": 64, "max_seq_len": 64,
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "dim": 32,
    "intermediate_size": 64, "ffn_dim": 64, "d_ff": 64, "n_inner": 64, "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "num_hidden_layers": 3, "n_layer": 3, "num_layers": 3, "encoder_layers": 3, "decoder_layers": 3,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "d_kv": 8,
}
TINY_SUFFIXES = (("_hidden_size", 32), ("_intermediate_size", 64), ("_ffn_dim", 64), ("_num_layers", 3),
                 ("_hidden_layers", 3), ("_attention_heads", 4), ("_embed_dim", 32), ("_hidden_dim", 32),
                 ("codebook_dim", 32))
BATCH, SEQ = 2, 8

# --------------------------------------------------------------------------- spot checks
#
# Key: "<file relative to the package root>:<holder class>".  What the generic
# build needs besides (every entry optional):
#   config:  {attribute: value} passed to the config class on top of the tiny sizes
#   build:   expression giving the module, with `C` the class (original or rewritten) and `cfg` the config
#   inputs:  expression giving (args, kwargs) on the CPU, with `torch`, `cfg`, `g` (a seeded torch.Generator),
#            `B`, `S`
#   method:  the method to call (default: the one holding the loop; `forward` is called through `__call__`)
SPOT_CHECKS: dict[str, dict] = {
    "transformers/models/wavtokenizer/modeling_wavtokenizer.py:WavTokenizerVocosBackbone": dict(
        inputs="((torch.randn(B, cfg.hidden_size, 16, generator=g), torch.tensor([0])), {})",
    ),
}

RTOL, ATOL = 1e-4, 1e-5  # float32, as `--check`
GRAD_FACTOR = 10.0

# --------------------------------------------------------------------------- the tool


def snapshot_tool() -> dict:
    """Copy the working tree's ``loop2scan/`` and ``codemods/`` (installed as ``loop2scan_codemods``)."""
    from nnx_audit import tree_hash

    shutil.rmtree(TOOL_SNAPSHOT, ignore_errors=True)
    for pkg, name in (("loop2scan", "loop2scan"), ("codemods", "loop2scan_codemods")):
        shutil.copytree(os.path.join(REPO_ROOT, pkg), os.path.join(TOOL_SNAPSHOT, name),
                        ignore=shutil.ignore_patterns("__pycache__"))
    src = machine_info()["loop2scan_source"]
    return {"commit": src.get("commit"), "local_changes": src.get("local_changes"),
            "sources_sha256_16": tree_hash(TOOL_SNAPSHOT)}


def tool_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = TOOL_SNAPSHOT
    env.setdefault("PYTHONHASHSEED", "0")
    env.pop("VIRTUAL_ENV", None)
    return env


def loop2scan(args: list[str], cwd: str, stdin: Optional[str] = None, timeout: float = 3600
              ) -> tuple[int, str, str, float]:
    """``python -m loop2scan ARGS`` with the tool snapshot, in ``cwd``."""
    cmd = [sys.executable, "-m", "loop2scan", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0


def code_titles() -> dict[str, str]:
    code, out, err, _ = run_cmd([sys.executable, "-c", "import json; from loop2scan.codes import CODES; "
                                                       "print(json.dumps({k: v.title for k, v in CODES.items()}))"],
                                env=tool_env(), timeout=120)
    return json.loads(out) if code == 0 else {}


# --------------------------------------------------------------------------- sources

def copy_package(top: str, dist: str, version: str) -> str:
    """A project holding a copy of the installed package ``top`` (``.py`` files); its root."""
    mod = __import__(top)
    src = os.path.dirname(os.path.abspath(mod.__file__))
    root = os.path.join(SCRATCH, f"{dist}-{version}")
    shutil.rmtree(root, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(src))
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                shutil.copy2(os.path.join(dirpath, name), os.path.join(root, rel))
    with open(os.path.join(root, "pyproject.toml"), "w", encoding="utf-8") as f:
        f.write(f'[project]\nname = "{dist}"\nversion = "{version}"\n\n[tool.loop2scan]\n')
    return root


def installed_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- loops


def _unwrap(it: ast.AST) -> tuple[Optional[str], str]:
    """(X, how) when ``it`` iterates ``self.X`` (sliced, or inside ``enumerate``/``reversed``/``zip``/``list``)."""
    how = "plain"
    while True:
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
                it.func.id in ("enumerate", "reversed", "zip", "list", "iter") and it.args:
            how = it.func.id if how == "plain" else how
            it = it.args[0]
        elif isinstance(it, ast.Subscript) and isinstance(it.slice, ast.Slice):
            it = it.value
        else:
            break
    if isinstance(it, ast.Attribute) and isinstance(it.value, ast.Name) and it.value.id == "self":
        return it.attr, how
    return None, how


def _element_names(loop: ast.For, how: str) -> set[str]:
    t = loop.target
    if isinstance(t, ast.Name):
        return {t.id}
    if isinstance(t, ast.Tuple) and t.elts:
        pick = t.elts[1] if how == "enumerate" and len(t.elts) == 2 else t.elts[0]
        return {pick.id} if isinstance(pick, ast.Name) else set()
    return set()


def _calls_element(loop: ast.For, names: set[str]) -> bool:
    for node in ast.walk(ast.Module(body=loop.body, type_ignores=[])):
        if isinstance(node, ast.Call):
            f = node.func
            while isinstance(f, ast.Attribute):
                f = f.value
            if isinstance(f, ast.Name) and f.id in names:
                return True
            for a in node.args:  # self._gradient_checkpointing_func(layer.__call__, ...)
                if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id in names:
                    return True
    return False


def loop_facts(source: str) -> dict[tuple[int, int], dict]:
    """Per ``for`` loop (line, 1-based column): the layer attribute it iterates, the class and method holding it."""
    tree = ast.parse(source)
    out: dict[tuple[int, int], dict] = {}

    def visit(node: ast.AST, cls: Optional[str], func: Optional[str], outer: Optional[str]) -> None:
        for child in ast.iter_child_nodes(node):
            c, f, o = cls, func, outer
            if isinstance(child, ast.ClassDef):
                c, f = (f"{cls}.{child.name}" if cls and func is None else child.name), None
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                f = child.name if func is None else func
                o = outer or (None if cls else child.name)
            if isinstance(child, (ast.For, ast.AsyncFor)):
                attr, how = _unwrap(child.iter)
                layer = attr is not None and _calls_element(child, _element_names(child, how))
                out[(child.lineno, child.col_offset + 1)] = {
                    "attr": attr, "calls_element": layer, "iterates": how, "class": cls, "method": func,
                    "function": outer}
            visit(child, c, f, o)

    visit(tree, None, None, None)
    return out


def blockers_of(loop: dict) -> list[dict]:
    """Every blocker of a declined loop: the report's ``blockers`` when it has them, else its one code."""
    bl = loop.get("blockers")
    if isinstance(bl, list) and bl:
        return [{"code": b.get("code"), "message": b.get("message", ""), "line": b.get("line")} for b in bl]
    return [{"code": loop["code"], "message": loop["message"], "line": loop["line"]}]


def pattern(message: str) -> str:
    """The message with its quoted code, line numbers and file names elided (groups messages of one kind)."""
    text = re.sub(r"`[^`]*`", "`…`", message)
    text = re.sub(r"\(in [^)]*\)", "", text)
    text = re.sub(r"line \d+( and line \d+)?", "line N", text)
    return re.sub(r"\s+", " ", text).strip()


def summarize(report: dict, root: str) -> dict:
    """Counts of one tool run, the layer loops and their blockers, the rewrites."""
    by_status: collections.Counter = collections.Counter()
    by_code: collections.Counter = collections.Counter()
    errors, rewrites, layer_loops = [], [], []
    examples: dict[str, dict] = {}
    has_blockers = False
    for f in report["files"]:
        rel = os.path.relpath(os.path.join(root, f["path"]), root) if not os.path.isabs(f["path"]) else \
            os.path.relpath(f["path"], root)
        if f.get("error"):
            errors.append({"file": rel, "error": f["error"][:300]})
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                facts = loop_facts(fh.read())
        except (OSError, SyntaxError, UnicodeDecodeError):
            facts = {}
        for lp in f["loops"]:
            by_status[lp["status"]] += 1
            by_code[lp["code"]] += 1
            if lp["status"] != "rewritten":
                examples.setdefault(lp["code"], {"file": rel, "line": lp["line"], "message": lp["message"]})
            fact = facts.get((lp["line"], lp["col"]), {})
            has_blockers = has_blockers or "blockers" in lp
            if lp["status"] == "rewritten":
                rewrites.append({"file": rel, "line": lp["line"], "target": lp.get("target"),
                                 "message": lp["message"], "class": fact.get("class"),
                                 "method": fact.get("method"), "function": fact.get("function"),
                                 "layers": lp.get("layers"), "carry": lp.get("carry")})
            is_layer = lp["status"] in ("rewritten", "declined") and (
                lp["code"] in LAYER_CODES or bool(lp.get("layers"))
                or (fact.get("attr") is not None and fact.get("calls_element")))
            if is_layer:
                layer_loops.append({
                    "file": rel, "line": lp["line"], "status": lp["status"], "code": lp["code"],
                    "attr": fact.get("attr"), "iterates": fact.get("iterates"), "class": fact.get("class"),
                    "stack": fact.get("attr") in STACK_ATTRS,
                    "blockers": blockers_of(lp) if lp["status"] == "declined" else []})
    return {"files": len(report["files"]), "loops": sum(by_status.values()), "rewrites": by_status["rewritten"],
            "by_status": dict(by_status), "by_code": dict(sorted(by_code.items())), "examples": examples,
            "errors": errors, "report_has_blockers": has_blockers, "rewrite_list": rewrites,
            "layer_loops": layer_breakdown(layer_loops, has_blockers),
            # one line per loop: "file:line self.<attribute> [stack] status blocker codes"
            "layer_loop_list": [f"{lp['file']}:{lp['line']} self.{lp['attr']}{' stack' if lp['stack'] else ''} "
                                f"{lp['status']} {' '.join(b['code'] for b in lp['blockers'])}".rstrip()
                                for lp in layer_loops]}


def _blocker_table(loops: list[dict], complete: bool) -> dict:
    """Blockers of declined loops: per code and per message pattern (loops, with an example), and, when the
    report lists every blocker (``complete``), the loops held back by exactly one."""
    per_code: collections.Counter = collections.Counter()
    per_pattern: dict[tuple[str, str], dict] = {}
    single: collections.Counter = collections.Counter()
    first: collections.Counter = collections.Counter()
    for lp in loops:
        bl = lp["blockers"]
        if not bl:
            continue
        first[bl[0]["code"]] += 1
        for code in sorted({b["code"] for b in bl}):
            per_code[code] += 1
        seen = set()
        for b in bl:
            key = (b["code"], pattern(b["message"]))
            if key in seen:
                continue
            seen.add(key)
            rec = per_pattern.setdefault(key, {"code": key[0], "pattern": key[1], "loops": 0,
                                               "example": {"file": lp["file"], "line": lp["line"],
                                                           "message": b["message"]}})
            rec["loops"] += 1
        if len(bl) == 1:
            single[bl[0]["code"]] += 1
    return {"declined": sum(1 for lp in loops if lp["blockers"]),
            "by_first_code": dict(first.most_common()),
            "by_code": dict(per_code.most_common()),
            "by_pattern": sorted(per_pattern.values(), key=lambda r: (-r["loops"], r["code"], r["pattern"])),
            "single_blocker": {"loops": sum(single.values()), "by_code": dict(single.most_common())}
            if complete else None}


def layer_breakdown(loops: list[dict], complete: bool) -> dict:
    stack = [lp for lp in loops if lp["stack"]]
    return {"loops": len(loops), "by_status": dict(collections.Counter(lp["status"] for lp in loops)),
            "by_attribute": dict(collections.Counter(lp["attr"] or "?" for lp in loops).most_common(15)),
            "blockers": _blocker_table(loops, complete),
            "stack": {"attributes": sorted(STACK_ATTRS), "loops": len(stack),
                      "by_status": dict(collections.Counter(lp["status"] for lp in stack)),
                      "by_iteration": dict(collections.Counter(lp["iterates"] for lp in stack)),
                      "blockers": _blocker_table(stack, complete)}}


# --------------------------------------------------------------------------- execution (parent side)

def rewritten_source(root: str, rel: str) -> tuple[Optional[str], str]:
    """The rewritten text of ``rel`` (the copy is not changed), or (None, why)."""
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    code, out, err, _ = loop2scan(["rewrite", "--framework", "torch_xla", "--write", "--stdin-filename", rel, "-"],
                                  cwd=root, stdin=text, timeout=600)
    if code != 0 or not out.strip():
        return None, f"exit {code}: {last_error_line(err or out)}"
    return out, ""


def run_worker(spec: dict, workdir: str, extra_path: Optional[str] = None, timeout: float = 900,
               script: str = __file__, crashed: str = "crashed-worker") -> dict:
    """Run ``script --worker SPEC`` in a fresh process (XLA on the CPU unless set); its JSON verdict,
    or ``crashed`` when the worker dies or times out."""
    os.makedirs(workdir, exist_ok=True)
    spec_path = os.path.join(workdir, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    env = dict(os.environ)
    env.setdefault("PJRT_DEVICE", "CPU")
    env.setdefault("PYTHONHASHSEED", "0")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    code, out, err, secs = run_cmd([sys.executable, os.path.abspath(script), "--worker", spec_path],
                                   cwd=workdir, env=env, timeout=timeout)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                res = json.loads(line)
                res["seconds"] = round(secs, 1)
                return res
            except json.JSONDecodeError:
                break
    why = "timed out" if code is None else f"worker exit {code}: {last_error_line(err or out)}"
    return {"verdict": crashed, "reason": why, "seconds": round(secs, 1)}


def write_rewritten(work: str, rel: str, text: str) -> tuple[str, str]:
    """Write the rewritten text of ``rel`` under ``work``: (its folder, its path)."""
    out_dir = os.path.join(work, os.path.dirname(rel))
    os.makedirs(out_dir, exist_ok=True)
    rewritten_path = os.path.join(out_dir, os.path.basename(rel))
    with open(rewritten_path, "w", encoding="utf-8") as f:
        f.write(text)
    return out_dir, rewritten_path


def execute(rw: dict, root: str, module_prefix: str, work: str, extra_path: Optional[str] = None,
            rewritten_text: Optional[str] = None) -> dict:
    """Run the original and the rewritten version of the class holding a rewrite; the verdict."""
    rel = rw["file"]
    if rw.get("class") is None:
        return {"verdict": "could-not-build", "reason": "the loop is not in a method of a class"}
    if rewritten_text is None:
        rewritten_text, why = rewritten_source(root, rel)
        if rewritten_text is None:
            return {"verdict": "could-not-build", "reason": f"no rewritten source: {why}"}
    out_dir, rewritten_path = write_rewritten(work, rel, rewritten_text)
    module = module_prefix + rel[:-3].replace("/", ".")
    key = f"{rel}:{rw['class']}"
    spec = {"module": module, "rewritten_path": rewritten_path, "holder": rw["class"], "method": rw["method"],
            "spot": SPOT_CHECKS.get(key, {}), "line": rw["line"]}
    res = run_worker(spec, os.path.join(out_dir, f"{os.path.basename(rel)[:-3]}.{rw['line']}"), extra_path)
    if res.get("verdict") == "crashed-worker":  # the worker died: a crash of whichever side ran
        res["verdict"] = "crashed"
    return res


# --------------------------------------------------------------------------- execution (worker side)

def _worker(spec_path: str, work=None) -> None:
    """The worker process: ``work(spec)`` (this audit's :func:`_work` by default), its verdict printed as JSON."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    t0 = time.perf_counter()
    try:
        res = (work or _work)(spec)
    except _Verdict as v:
        res = {"verdict": v.verdict, "reason": v.reason, **v.extra}
    res["worker_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, default=str), flush=True)


class _Verdict(Exception):
    def __init__(self, verdict: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.verdict, self.reason, self.extra = verdict, reason, extra


def _short_exc(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:300]}"


def _load_rewritten(orig, path: str):
    import types

    name = f"{orig.__name__}__loop2scan_rewritten"
    module = types.ModuleType(name)
    module.__file__ = path
    module.__package__ = orig.__package__
    sys.modules[name] = module
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)
    return module


def _config_base():
    try:
        from transformers import PreTrainedConfig as base
    except ImportError:  # older transformers
        from transformers import PretrainedConfig as base
    return base


def _config_class(orig, holder):
    """The config class the holder's constructor takes (annotation), else the module's models' ``config_class``,
    else the first config class of ``configuration_X.py``."""
    import inspect

    base = _config_base()
    try:
        params = list(inspect.signature(holder.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    if params:
        ann = params[0].annotation
        if isinstance(ann, str):
            for name in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", ann):
                cand = orig.__dict__.get(name)
                if isinstance(cand, type) and issubclass(cand, base):
                    return cand
        elif isinstance(ann, type) and issubclass(ann, base):
            return ann
        else:
            for arg in getattr(ann, "__args__", ()) or ():
                if isinstance(arg, type) and issubclass(arg, base):
                    return arg
    cc = getattr(holder, "config_class", None)
    if isinstance(cc, type) and issubclass(cc, base):
        return cc
    for obj in vars(orig).values():
        cc = getattr(obj, "config_class", None) if isinstance(obj, type) else None
        if isinstance(cc, type) and issubclass(cc, base):
            return cc
    import importlib

    pkg = orig.__package__
    stem = orig.__name__.rsplit(".", 1)[-1].replace("modeling_", "configuration_", 1)
    try:
        conf = importlib.import_module(f"{pkg}.{stem}")
    except ImportError:
        return None
    for obj in vars(conf).values():
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == conf.__name__:
            return obj
    return None


def _tiny_value(name: str, value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    target = TINY_EXACT.get(name)
    if target is None:
        for suffix, v in TINY_SUFFIXES:
            if name.endswith(suffix):
                target = v
                break
    if target is None and (name.endswith("_token_id") or name.endswith("_token_index")) and value >= 99:
        return 1
    return target if target is not None and target < value else None


def _tiny_config(cls, extra: dict, exact_only: bool = False, depth: int = 0):
    """The config class with tiny sizes (see ``TINY_EXACT``), its sub-configurations too."""
    base_cls = _config_base()
    default = cls()
    kwargs: dict[str, Any] = {}
    for name, value in vars(default).items():
        if name.startswith("_"):
            continue
        if isinstance(value, base_cls) and depth < 2:
            try:
                kwargs[name] = _tiny_config(type(value), {}, exact_only, depth + 1)[0]
            except Exception:  # noqa: BLE001 - keep the default sub-configuration
                pass
            continue
        v = _tiny_value(name, value) if not exact_only or name in TINY_EXACT else None
        if v is not None:
            kwargs[name] = v
    if hasattr(default, "use_cache"):
        kwargs["use_cache"] = False
    kwargs.update(extra)
    cfg = cls(**kwargs)
    try:
        cfg._attn_implementation = "eager"
    except Exception:  # noqa: BLE001
        pass
    return cfg, kwargs


def _make_config(cls, extra: dict):
    errors = []
    for exact_only in (False, True):
        try:
            cfg, kwargs = _tiny_config(cls, extra, exact_only)
            return cfg, {k: (v if isinstance(v, (int, float, str, bool)) else type(v).__name__)
                         for k, v in kwargs.items()}
        except Exception as e:  # noqa: BLE001
            errors.append(_short_exc(e))
    raise _Verdict("could-not-build", f"config `{cls.__name__}`: {errors[-1]}")


def _generic_inputs(fn, cfg, torch, g) -> tuple[tuple, dict, str]:
    """Inputs for a forward from its parameter names; raises when a required one is unknown."""
    import inspect

    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or 32
    vocab = min(getattr(cfg, "vocab_size", 99) or 99, 99)
    kwargs: dict[str, Any] = {}
    params = list(inspect.signature(fn).parameters.values())[1:]
    names = [p.name for p in params]
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in ("input_ids", "decoder_input_ids") and (p.default is p.empty or p.name == "input_ids"
                                                             or "decoder_input_ids" in names):
            kwargs[p.name] = torch.randint(1, vocab, (BATCH, SEQ), generator=g)
        elif p.name in ("hidden_states", "inputs_embeds", "x", "hidden", "embeddings", "h") and \
                (p.default is p.empty or ("input_ids" not in names and not kwargs)):
            kwargs[p.name] = torch.randn(BATCH, SEQ, hidden, generator=g)
        elif p.default is p.empty:
            raise _Verdict("could-not-build", f"no input for the required parameter `{p.name}` of "
                           f"`{getattr(fn, '__qualname__', fn)}` (add a spot check)")
    if not kwargs:
        raise _Verdict("could-not-build", f"no input known for `{getattr(fn, '__qualname__', fn)}`")
    desc = ", ".join(f"{k}{tuple(v.shape)}" for k, v in kwargs.items())
    return (), kwargs, desc


def _tensors(obj, prefix: str = "out") -> list[tuple[str, Any]]:
    import torch

    out: list[tuple[str, Any]] = []
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):  # ModelOutput too
        for k, v in obj.items():
            out += _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            out += _tensors(v, f"{prefix}[{i}]")
    return out


def _run_one(model, method: str, args, kwargs, cotangent_seed: int):
    """Outputs, then gradients of a fixed random projection of the floating outputs w.r.t. every parameter."""
    import torch

    fn = model if method == "forward" else getattr(model, method)
    out = _tensors(fn(*args, **kwargs))
    floats = [(n, t) for n, t in out if t.is_floating_point() and t.requires_grad]
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads: list[tuple[str, Any]] = []
    if floats and params:
        g = torch.Generator().manual_seed(cotangent_seed)
        loss = sum((t * torch.randn(tuple(t.shape), generator=g).to(t.device, t.dtype)).sum() for _, t in floats)
        gs = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        grads = [(f"grad:{n}", gr) for (n, _), gr in zip(params, gs)]
    return out, grads


def _compare(a: list, b: list, rtol: float, atol: float) -> tuple[list[str], float, float, int]:
    """Differences (up to 5 described), max abs error, max relative error, pairs compared."""
    import torch

    diffs: list[str] = []
    max_abs = max_rel = 0.0
    bmap = dict(b)
    if [n for n, _ in a] != [n for n, _ in b]:
        diffs.append(f"different outputs: {[n for n, _ in a][:6]} vs {[n for n, _ in b][:6]}")
    n = 0
    for name, x in a:
        y = bmap.get(name, "missing")
        if isinstance(y, str) or (x is None) != (y is None):
            diffs.append(f"{name}: {'missing' if isinstance(y, str) else 'None on one side only'}")
            continue
        if x is None:
            continue
        n += 1
        if x.shape != y.shape or x.dtype != y.dtype:
            diffs.append(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            continue
        if x.is_floating_point():
            xf, yf = x.double(), y.double()
            err = (xf - yf).abs().nan_to_num(0.0)
            if err.numel():
                max_abs = max(max_abs, float(err.max()))
                max_rel = max(max_rel, float((err / (xf.abs() + atol)).max()))
            if not torch.allclose(yf, xf, rtol=rtol, atol=atol, equal_nan=True):
                diffs.append(f"{name}: max abs error {float(err.max()):.3g}")
        elif not torch.equal(x, y):
            diffs.append(f"{name}: differs")
    return diffs, max_abs, max_rel, n


def _work(spec: dict) -> dict:
    import importlib
    import inspect

    import torch
    import torch_xla

    orig = importlib.import_module(spec["module"])
    try:
        new = _load_rewritten(orig, spec["rewritten_path"])
    except Exception as e:  # noqa: BLE001
        raise _Verdict("crashed", f"the rewritten module does not load: {_short_exc(e)}")
    holder_name, method = spec["holder"], spec.get("method") or "forward"
    spot = spec.get("spot") or {}
    method = spot.get("method", method)

    def resolve(mod, qual):
        obj = mod
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj

    o_holder = resolve(orig, holder_name)
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        PreTrainedModel = ()  # noqa: N806
    # what to build: the holder, then the module's model classes containing it
    candidates = [holder_name]
    if not spot:
        tops = [n for n, c in vars(orig).items() if isinstance(c, type) and PreTrainedModel and
                issubclass(c, PreTrainedModel) and c.__module__ == orig.__name__ and n != holder_name and
                not n.endswith("PreTrainedModel")]
        tops.sort(key=lambda n: (not n.endswith("Model"), "For" in n, len(n)))
        candidates += tops[:4]
    reasons = []
    for cand in candidates:
        try:
            return _try_build_and_run(spec, orig, new, cand, holder_name, method if cand == holder_name else
                                      "forward", spot if cand == holder_name else {}, o_holder, torch, torch_xla,
                                      inspect)
        except _Verdict as v:
            if v.verdict != "could-not-build":
                raise
            reasons.append(f"{cand}: {v.reason}")
    raise _Verdict("could-not-build", "; ".join(reasons)[:900])


def _try_build_and_run(spec, orig, new, cand, holder_name, method, spot, o_holder, torch, torch_xla, inspect):
    o_cls, n_cls = getattr(orig, cand), getattr(new, cand)
    cfg_cls = _config_class(orig, o_cls)
    cfg, overrides = (None, {})
    if cfg_cls is not None:
        cfg, overrides = _make_config(cfg_cls, spot.get("config", {}))
    build = spot.get("build")

    def make(cls):
        if build:
            return eval(build, {"C": cls, "cfg": cfg, "torch": torch})  # noqa: S307 - expressions of this file
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if cfg is None:
            raise _Verdict("could-not-build", "no config class found")
        if len(required) > 1:
            raise _Verdict("could-not-build", f"`{cls.__name__}.__init__` needs "
                           f"{', '.join(p.name for p in required)} (add a spot check)")
        return cls(cfg)

    try:
        torch.manual_seed(0)
        a = make(o_cls)
        torch.manual_seed(1)
        b = make(n_cls)
    except _Verdict:
        raise
    except Exception as e:  # noqa: BLE001
        raise _Verdict("could-not-build", f"`{cand}({type(cfg).__name__})`: {_short_exc(e)}")
    if cand != holder_name and not any(isinstance(m, o_holder) for m in a.modules()):
        raise _Verdict("could-not-build", f"`{cand}` holds no `{holder_name}` with this configuration")
    missing = b.load_state_dict(a.state_dict(), strict=True)
    del missing
    g = torch.Generator().manual_seed(0)
    fn = getattr(o_cls, method)
    if spot.get("inputs"):
        args, kwargs = eval(spot["inputs"], {"torch": torch, "cfg": cfg, "g": g, "B": BATCH,  # noqa: S307
                                             "S": SEQ})
        desc = spot["inputs"]
    else:
        args, kwargs, desc = _generic_inputs(fn, cfg, torch, g)
    dev = torch_xla.device()
    a.to(dev).eval()
    b.to(dev).eval()
    to = (lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t)  # noqa: E731
    args = tuple(to(x) for x in args)
    kwargs = {k: to(v) for k, v in kwargs.items()}
    info = {"built": cand, "config": type(cfg).__name__ if cfg is not None else None,
            "config_overrides": overrides, "called": f"{cand}.{method}", "inputs": desc,
            "parameters": sum(1 for _ in a.parameters())}
    try:
        out_a, grads_a = _run_one(a, method, args, kwargs, 7)
    except Exception as e:  # noqa: BLE001
        raise _Verdict("could-not-build", f"the original `{cand}.{method}` does not run on these inputs: "
                       f"{_short_exc(e)}", **info)
    try:
        out_b, grads_b = _run_one(b, method, args, kwargs, 7)
    except Exception as e:  # noqa: BLE001
        raise _Verdict("crashed", f"the rewritten `{cand}.{method}` raises: {_short_exc(e)}", **info)
    bufs_a = [(f"buffer:{n}", t) for n, t in a.named_buffers()]
    bufs_b = [(f"buffer:{n}", t) for n, t in b.named_buffers()]
    torch_xla.sync()
    cpu = (lambda pairs: [(n, None if t is None else t.detach().cpu()) for n, t in pairs])  # noqa: E731
    out_a, out_b, grads_a, grads_b = cpu(out_a), cpu(out_b), cpu(grads_a), cpu(grads_b)
    bufs_a, bufs_b = cpu(bufs_a), cpu(bufs_b)
    d1, e1, _, n1 = _compare(out_a + bufs_a, out_b + bufs_b, RTOL, ATOL)
    d2, e2, r2, n2 = _compare(grads_a, grads_b, RTOL * GRAD_FACTOR, ATOL * GRAD_FACTOR)
    info.update(outputs_compared=n1, gradients_compared=n2, max_abs_error=max(e1, e2),
                max_abs_error_outputs=e1, max_abs_error_gradients=e2, max_rel_error_gradients=r2)
    if not n2:
        info["note"] = "no gradient compared (no floating output depends on a parameter)"
    diffs = d1 + d2
    if diffs:
        return {"verdict": "different", "reason": "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)"
                                                                          if len(diffs) > 5 else ""), **info}
    return {"verdict": "equal", **info}


# --------------------------------------------------------------------------- self-test

FIXTURE_PACKAGE = "l2s_txa_fixture"
FIXTURE_CONFIG = '''\
from transformers import PreTrainedConfig


class FixtureConfig(PreTrainedConfig):
    model_type = "l2s_txa_fixture"

    def __init__(self, vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=12, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)
'''
FIXTURE_MODELING = '''\
from typing import Optional

import torch
from torch import nn

from .configuration_fixture import FixtureConfig


class FixtureBlock(nn.Module):
    def __init__(self, config: FixtureConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.mix = nn.Linear(config.hidden_size, config.hidden_size)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.norm(hidden_states)
        scores = torch.matmul(self.mix(h), h.transpose(-1, -2)) + mask
        h = h + torch.matmul(torch.softmax(scores, dim=-1), h)
        return hidden_states + self.down(torch.nn.functional.gelu(self.up(h)))


class FixtureModel(nn.Module):
    def __init__(self, config: FixtureConfig):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([FixtureBlock(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed(input_ids)
        n = input_ids.shape[1]
        mask = torch.triu(torch.full((n, n), -1e9, device=hidden_states.device), diagonal=1)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        return self.norm(hidden_states)
'''
#: Edits of the fixture's rewrite: (name, old text, new text, expected verdict).
SABOTAGE = (
    ("as rewritten", None, None, "equal"),
    ("computes something else", "return hidden_states + self.down(", "return hidden_states - self.down(",
     "different"),
    ("raises", "from torch_xla.experimental.scan_layers import scan_layers",
     "from torch_xla.experimental.scan_layers import scan_layers\nscan_layers = None", "crashed"),
)


def self_test() -> dict:
    """The whole pipeline (tool, layer-loop facts, rewritten source, worker) on a generated fixture package."""
    t0 = time.perf_counter()
    base = tempfile.mkdtemp(prefix="l2s-txa-")
    try:
        pkg = os.path.join(base, FIXTURE_PACKAGE)
        os.makedirs(pkg)
        for name, text in (("__init__.py", ""), ("configuration_fixture.py", FIXTURE_CONFIG),
                           ("modeling_fixture.py", FIXTURE_MODELING)):
            with open(os.path.join(pkg, name), "w", encoding="utf-8") as f:
                f.write(text)
        with open(os.path.join(base, "pyproject.toml"), "w", encoding="utf-8") as f:
            f.write('[project]\nname = "l2s-txa-fixture"\nversion = "0"\n\n[tool.loop2scan]\n')
        rel = f"{FIXTURE_PACKAGE}/modeling_fixture.py"
        code, out, err, _ = loop2scan(["rewrite", "--framework", "torch_xla", "--format", "json", "--jobs", "1", rel],
                                      cwd=base)
        try:
            summary = summarize(json.loads(out), base)
        except json.JSONDecodeError:
            return {"passed": False, "reason": f"loop2scan exit {code}: {last_error_line(err or out)}"}
        cases = []
        if summary["rewrites"] != 1:
            return {"passed": False, "reason": f"expected 1 rewrite of the fixture, got {summary['rewrites']}: "
                    f"{json.dumps(summary['by_code'])}", "summary": {k: summary[k] for k in ("loops", "by_code")}}
        rw = summary["rewrite_list"][0]
        text, why = rewritten_source(base, rel)
        if text is None:
            return {"passed": False, "reason": f"no rewritten source: {why}"}
        for name, old, new, expected in SABOTAGE:
            variant = text if old is None else text.replace(old, new, 1)
            if old is not None and variant == text:
                cases.append({"case": name, "expected": expected, "verdict": "not-applied",
                              "reason": f"`{old}` is not in the rewrite"})
                continue
            res = execute(rw, base, "", os.path.join(base, "work", name.replace(" ", "-")), extra_path=base,
                          rewritten_text=variant)
            cases.append({"case": name, "expected": expected, "verdict": res["verdict"],
                          "reason": res.get("reason"), "max_abs_error": res.get("max_abs_error"),
                          "gradients_compared": res.get("gradients_compared"), "seconds": res.get("seconds")})
        layer = summary["layer_loops"]
        passed = all(c["verdict"] == c["expected"] for c in cases) and layer["stack"]["loops"] == 1
        return {"passed": passed, "rewrite": {"line": rw["line"], "class": rw["class"], "target": rw["target"]},
                "layer_loops_found": layer["loops"], "cases": cases,
                "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- the audit

def audit_transformers(titles: dict) -> dict:
    import transformers

    version = transformers.__version__
    t0 = time.perf_counter()
    root = copy_package("transformers", "transformers", version)
    files = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "transformers", "models", "*",
                                                                            "modeling_*.py")))
    log(f"transformers {version}: {len(files)} modeling files")
    args = ["rewrite", "--framework", "torch_xla", "--format", "json", "--jobs", str(JOBS), *files]
    code, out, err, secs = loop2scan(args, cwd=root)
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        return {"dist": "transformers", "version": version, "error": f"exit {code}: {last_error_line(err or out)}"}
    rec: dict[str, Any] = {"dist": "transformers", "version": version,
                           "command": "loop2scan rewrite --framework torch_xla --format json --jobs 2 "
                                      "transformers/models/*/modeling_*.py",
                           "tool_exit": code, "tool_seconds": round(secs, 1)}
    rec.update(summarize(report, root))
    work = os.path.join(SCRATCH, "rewritten")
    shutil.rmtree(work, ignore_errors=True)
    t1 = time.perf_counter()
    for rw in rec["rewrite_list"]:
        log(f"  executing {rw['file']}:{rw['line']} ({rw['class']})")
        rw.update(execute(rw, root, "", work))
        log(f"    {rw['verdict']}" + (f": {rw['reason']}" if rw.get("reason") else ""))
    verdicts = collections.Counter(rw["verdict"] for rw in rec["rewrite_list"])
    rec["execution"] = {"rewrites": len(rec["rewrite_list"]),
                        "executed": sum(verdicts[v] for v in ("equal", "different", "crashed")),
                        **{v.replace("-", "_"): verdicts.get(v, 0)
                           for v in ("equal", "different", "crashed", "could-not-build")},
                        "seconds": round(time.perf_counter() - t1, 1)}
    rec["titles"] = {c: titles.get(c, "") for c in rec["by_code"]}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def audit_other(dist: str, top: str, titles: dict) -> dict:
    version = installed_version(dist)
    if version is None:
        return {"dist": dist, "status": "not installed"}
    t0 = time.perf_counter()
    try:
        root = copy_package(top, dist, version)
    except Exception as e:  # noqa: BLE001
        return {"dist": dist, "version": version, "status": f"not importable: {_short_exc(e)}"}
    code, out, err, secs = loop2scan(["rewrite", "--framework", "torch_xla", "--format", "json", "--jobs",
                                      str(JOBS), top], cwd=root)
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        return {"dist": dist, "version": version, "status": f"exit {code}: {last_error_line(err or out)}"}
    rec = {"dist": dist, "version": version, "status": "audited",
           "command": f"loop2scan rewrite --framework torch_xla --format json --jobs 2 {top}",
           "tool_exit": code, "tool_seconds": round(secs, 1)}
    rec.update(summarize(report, root))
    rec.pop("layer_loop_list")
    rec["titles"] = {c: titles.get(c, "") for c in rec["by_code"]}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


# --------------------------------------------------------------------------- markdown

def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _blocker_rows(table: dict, limit: int) -> list[str]:
    rows = ["| code | loops | kind of blocker (quoted parts elided) | example |", "|---|---:|---|---|"]
    for r in table["by_pattern"][:limit]:
        ex = r["example"]
        rows.append(f"| {r['code']} | {r['loops']} | {_md(r['pattern'])} | `{ex['file']}:{ex['line']}`: "
                    f"{_md(ex['message'])} |")
    return rows


def write_markdown(data: dict) -> str:
    m = data["machine"]
    v = data["versions"]
    t = data["transformers"]
    L = ["# PyTorch/XLA audit: Hugging Face transformers", "",
         f"{data['date']}. {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, "
         f"torch {v.get('torch')}, torch_xla {v.get('torch_xla')}, transformers {v.get('transformers')}, "
         f"libcst {v.get('libcst')}.",
         f"Tool: working tree snapshot (sources sha256 {data['tool']['sources_sha256_16']}, commit "
         f"{(data['tool']['commit'] or '?')[:10]}{', with local changes' if data['tool']['local_changes'] else ''}). "
         f"Run: `.venv/bin/python benchmarks/torch_xla_audit.py` ({data['seconds']:.0f} s in all).", ""]
    if "error" in t:
        return "\n".join(L + [f"transformers: {t['error']}"]) + "\n"
    st = data.get("self_test") or {}
    if st:
        cases = ", ".join(f"{c['case']}: {c['verdict']}" for c in st.get("cases", []))
        L += [f"Harness self-test (generated fixture decoder, its rewrite and two sabotaged copies): "
              f"**{'passed' if st.get('passed') else 'FAILED'}** ({cases or st.get('reason')}).", ""]
    ex = t["execution"]
    bs = t["by_status"]
    L += ["## transformers", "",
          f"`{t['command']}` over a copy of the installed package (a project of its own), "
          f"{t['tool_seconds']:.0f} s.", "",
          "| files | loops | rewritten | declined | not a candidate | skipped | file errors |",
          "|---:|---:|---:|---:|---:|---:|---:|",
          f"| {t['files']} | {t['loops']} | {bs.get('rewritten', 0)} | {bs.get('declined', 0)} | "
          f"{bs.get('not-candidate', 0)} | {bs.get('skipped', 0)} | {len(t['errors'])} |", "",
          "Every rewrite executed, original against rewritten, on the XLA CPU device (outputs, buffers, gradients "
          "w.r.t. every parameter):", "",
          "| rewrites | executed | equal | different | crashed | could not build |",
          "|---:|---:|---:|---:|---:|---:|",
          f"| {ex['rewrites']} | {ex['executed']} | {ex['equal']} | {ex['different']} | {ex['crashed']} | "
          f"{ex['could_not_build']} |", "",
          "### Rewrites", "",
          "| file:line | class | target | verdict | built | gradients compared | max abs error | seconds |",
          "|---|---|---|---|---|---:|---:|---:|"]
    for rw in t["rewrite_list"]:
        verdict = rw["verdict"] + (f" ({_md(rw['reason'])})" if rw.get("reason") else "")
        err = rw.get("max_abs_error")
        L.append(f"| `{rw['file']}:{rw['line']}` | `{rw['class']}` | `{(rw.get('target') or '').rsplit('.', 1)[-1]}` "
                 f"| {verdict} | {rw.get('built', '-')} | {rw.get('gradients_compared', '-')} | "
                 f"{'-' if err is None else f'{err:.2e}'} | {rw.get('seconds', '-')} |")
    if not t["rewrite_list"]:
        L.append("| (none) | | | | | | | |")
    L += ["", "### Declines by code", "",
          "Every loop not rewritten, by its code (loops that are not candidates included).", "",
          "| code | loops | title | example |", "|---|---:|---|---|"]
    for code, n in sorted(t["by_code"].items(), key=lambda kv: (-kv[1], kv[0])):
        if code == "L2S000":
            continue
        e = t["examples"].get(code) or {}
        L.append(f"| {code} | {n} | {_md(t['titles'].get(code, ''))} | `{e.get('file')}:{e.get('line')}`: "
                 f"{_md(e.get('message', ''))} |")
    ll = t["layer_loops"]
    stack = ll["stack"]
    note = ("each declined loop lists every blocker the analysis found (`blockers`)" if t["report_has_blockers"]
            else "the report gives one code per loop (no `blockers` list): each declined loop counts its first "
                 "blocker only, and the loops held back by a single blocker cannot be told")
    L += ["", "### Layer loops", "",
          f"{ll['loops']} loops over lists of layers (a list attribute of `self` whose elements the body calls, or "
          f"a `L2S330`-`L2S334` code): {json.dumps(ll['by_status'])}. Of these, {stack['loops']} iterate the main "
          f"stack (`self.layers`, `self.layer`, `self.h`, `self.blocks`, ...): {json.dumps(stack['by_status'])}; "
          f"they iterate it {', '.join(f'{k}: {n}' for k, n in stack['by_iteration'].items())} (`plain`: the list "
          f"or a slice of it). Here {note}.", "",
          "Blockers of the stack loops, by code (loops):", "",
          "| code | loops (any blocker) | loops (first blocker) | loops held back by this blocker alone |",
          "|---|---:|---:|---:|"]
    sb = stack["blockers"]
    single = sb["single_blocker"]
    for code in sorted(set(sb["by_code"]) | set(sb["by_first_code"]),
                       key=lambda c: (-sb["by_code"].get(c, 0), c)):
        L.append(f"| {code} | {sb['by_code'].get(code, 0)} | {sb['by_first_code'].get(code, 0)} | "
                 f"{single['by_code'].get(code, 0) if single else 'n/a'} |")
    L += ["", (f"Stack loops held back by exactly one blocker: {single['loops']} of {sb['declined']}." if single else
               f"Stack loops held back by exactly one blocker: not known ({sb['declined']} declined; the report "
               "names one blocker per loop)."),
          "", "Most common blockers of the stack loops:", ""]
    L += _blocker_rows(sb, 15)
    L += ["", "Most common blockers of all layer loops:", ""]
    L += _blocker_rows(ll["blockers"], 10)
    others = data.get("others") or []
    if others:
        L += ["", "## Other PyTorch packages (tool only, no execution)", "",
              "| package | version | files | loops | rewritten | declined | not a candidate | layer loops | "
              "most common declines | seconds |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in others:
            if r.get("status") != "audited":
                L.append(f"| {r['dist']} | {r.get('version', '-')} | {_md(r.get('status'))} | | | | | | | |")
                continue
            bs = r["by_status"]
            top = ", ".join(f"{c} {n}" for c, n in sorted(r["by_code"].items(), key=lambda kv: -kv[1])
                            if c not in ("L2S000", "L2S001"))
            top = ", ".join(top.split(", ")[:5])
            L.append(f"| {r['dist']} | {r['version']} | {r['files']} | {r['loops']} | {bs.get('rewritten', 0)} | "
                     f"{bs.get('declined', 0)} | {bs.get('not-candidate', 0)} | {r['layer_loops']['loops']} | "
                     f"{top} | {r['tool_seconds']:.0f} |")
        for r in others:
            for rw in r.get("rewrite_list", []):
                L.append(f"\n{r['dist']} rewrite (not executed): `{rw['file']}:{rw['line']}` `{rw['class']}` "
                         f"({rw['message']})")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-others", action="store_true", help="transformers only")
    ap.add_argument("--no-self-test", action="store_true", help="skip the harness self-test")
    ap.add_argument("--self-test", action="store_true", help="run the harness self-test only (writes nothing)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return 0
    t0 = time.perf_counter()
    tool = snapshot_tool()
    log(f"tool snapshot {tool['sources_sha256_16']}")
    if args.self_test:
        st = self_test()
        print(json.dumps(redact(st), indent=2))
        return 0 if st.get("passed") else 1
    st = None
    if not args.no_self_test:
        log("self-test on the fixture")
        st = self_test()
        log(f"  {'passed' if st.get('passed') else 'FAILED'}: "
            f"{[(c['case'], c['verdict']) for c in st.get('cases', [])] or st.get('reason')}")
    titles = code_titles()
    trf = audit_transformers(titles)
    others = []
    if not args.no_others:
        for dist, top in OTHER_PACKAGES:
            log(f"{dist} (tool only)")
            others.append(audit_other(dist, top, titles))
    versions = {d: installed_version(d) for d in ("torch", "torch_xla", "transformers", "libcst", "click",
                                                   "loop2scan")}
    data = {"date": now_iso(), "machine": {k: v for k, v in machine_info().items() if k != "versions"},
            "versions": versions, "tool": tool,
            "options": "rewrite --framework torch_xla --format json --jobs 2",
            "tolerances": {"rtol": RTOL, "atol": ATOL, "gradients": f"{GRAD_FACTOR:g}x"},
            "tiny_config": {"exact": TINY_EXACT, "suffixes": dict(TINY_SUFFIXES), "batch": BATCH, "seq": SEQ},
            "self_test": st, "transformers": trf, "others": others, "seconds": round(time.perf_counter() - t0, 1)}
    roots = {TOOL_SNAPSHOT: "<tool>", SCRATCH: "<scratch>"}
    text = json.dumps(data)
    for root, name in sorted(roots.items(), key=lambda r: -len(r[0])):
        text = text.replace(root, name)
    data = redact(json.loads(text))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    with open(os.path.join(RESULTS_DIR, f"{RESULT_NAME}.md"), "w", encoding="utf-8") as f:
        f.write(write_markdown(data))
    log(f"wrote benchmarks/results/{RESULT_NAME}.json and .md ({data['seconds']:.0f} s)")
    ex = trf.get("execution") or {}
    bad = (ex.get("different") or 0) + (ex.get("crashed") or 0) + (0 if st is None or st.get("passed") else 1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
