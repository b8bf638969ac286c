"""torch_xla on the XLA CPU device: a decoder with backward, loop vs loop2scan output vs hand-written scan_layers.

    python benchmarks/compile_torch_xla_decoder.py                  # L = 8, 16, 32, 64; 3 repetitions (20-30 min on 2 cores)
    python benchmarks/compile_torch_xla_decoder.py --quick          # L = 8, 16; 1 repetition (a few minutes)
    python benchmarks/compile_torch_xla_decoder.py --sizes 32 --repeats 2 --steps 7

The model is ``torch_xla_decoder_model.py`` (pre-norm attention + MLP blocks,
d_model 256, 4 heads, MLP hidden 1024, seq 64, batch 4; every block gets a
boolean causal mask and int64 positions).  Three variants, each with the same
weights and inputs:

* ``loop``         the model file as written (``for layer in self.layers: h = layer(h, mask, positions)``);
* ``loop2scan``    ``loop2scan.rewrite_source(text, "torch_xla")`` of that file, produced here at
                   benchmark time, written to a temporary directory and imported by path (a step
                   module holding the layer, with the mask and positions as non-persistent buffers,
                   and a ``scan_layers`` call);
* ``handwritten``  what a careful engineer writes by hand: a subclass of the model whose forward calls
                   ``torch_xla.experimental.scan_layers.scan_layers`` over adapter modules, each
                   holding one block and the mask and positions as non-persistent buffers (the
                   positions are int64 and ``scan_layers`` traces its carry with gradients, so they
                   cannot ride in a tuple carry).  ``is_layer_pure`` is left at its default, as in the
                   loop2scan output.

One step is forward + backward: ``loss = (model(h, mask, positions) * w).sum()``
with a fixed random ``w``, ``loss.backward()``, ``torch_xla.sync()`` and
``xm.wait_device_ops()`` (gradients are set to ``None`` before each step, so
every step traces the same graph).  Each measurement is a fresh process (this
script with ``--worker``, ``PJRT_DEVICE=CPU``) that builds the model on the
host, moves it and the inputs to the XLA device, then times

* ``first_call_s``: the first step, from the model on the device to the end of
  its sync (Python tracing of forward and backward, XLA compilation, the run),
  with ``trace_s`` (until the sync), ``sync_s``, the XLA ``CompileTime`` of the
  step and the CPU time of the process over it;
* ``step_s``: the median (and min) of ``--steps`` later steps, each synced,
  after ``--warmup`` steps; the XLA compilations during the warm-up and the
  timed steps are counted (a non-zero count during the timed steps is a
  recompile).

Repetitions are the outermost loop; inside one, the sizes in order and the
three variants in an order that changes from one repetition to the next (each
goes first once in three).  In the first repetition every worker also saves
its output, loss and some gradients; the driver compares them with the loop's
(maximum absolute difference).  Results: ``results/compile_torch_xla_decoder.json``
(``compile_torch_xla_decoder_quick.json`` for ``--quick``), written after every
measurement, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (BENCH_DIR, REPO_ROOT, log, machine_info, min_median, now_iso,  # noqa: E402
                    write_result)

NAME = "compile_torch_xla_decoder"
MODEL_FILE = os.path.join(BENCH_DIR, "torch_xla_decoder_model.py")
VARIANTS = ("loop", "loop2scan", "handwritten")
# each variant goes first once every three repetitions, and the orders alternate direction
ORDERS = [(0, 1, 2), (2, 1, 0), (1, 2, 0), (0, 2, 1), (2, 0, 1), (1, 0, 2)]
SIZES = (8, 16, 32, 64)
QUICK_SIZES = (8, 16)
FIXED = {"d_model": 256, "heads": 4, "hidden": 1024, "seq": 64, "batch": 4}
STEPS = 5
WARMUP = 2
WORKER_TIMEOUT_S = 1800
# the gradients saved for the comparison (besides the norm of every parameter's gradient)
COMPARED_LAYERS = ("first", "middle", "last")


# --------------------------------------------------------------------------- worker (a fresh process)

def import_path(path: str, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def handwritten_decoder(base):
    """The hand-written ``scan_layers`` form of ``base.Decoder``: same ``__init__`` (same parameters, same
    ``state_dict``), a forward that scans the blocks."""
    from torch import nn
    from torch_xla.experimental.scan_layers import scan_layers

    class BlockWithInputs(nn.Module):
        """One block and the tensors every block is called with (a scanned layer cannot close over a
        tensor; as non-persistent buffers they are stacked with the blocks' parameters)."""

        def __init__(self, block, mask, positions):
            super().__init__()
            self.block = block
            self.register_buffer("mask", mask, persistent=False)
            self.register_buffer("positions", positions, persistent=False)

        def forward(self, h):
            return self.block(h, self.mask, self.positions)

    class ScanDecoder(base.Decoder):
        def forward(self, h, mask, positions):
            h = scan_layers([BlockWithInputs(block, mask, positions) for block in self.layers], h)
            return self.final_norm(h)

    return ScanDecoder


def xla_compiles() -> tuple[int, float]:
    """(number of XLA compilations so far, their total seconds) from torch_xla's metrics."""
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    if not data:
        return 0, 0.0
    return int(data[0]), float(data[1]) / 1e9


def worker(args: argparse.Namespace) -> dict:
    os.environ.setdefault("PJRT_DEVICE", "CPU")
    t_start = time.perf_counter()
    import torch
    import torch_xla
    import torch_xla.core.xla_model as xm

    if args.variant == "handwritten":
        model_cls = handwritten_decoder(import_path(args.variant_file, "l2s_txla_model"))
    else:
        model_cls = import_path(args.variant_file, "l2s_txla_model").Decoder
    t_import = time.perf_counter()

    f = FIXED
    torch.manual_seed(0)
    model = model_cls(f["d_model"], f["heads"], f["hidden"], args.layers)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(f["batch"], f["seq"], f["d_model"], generator=g)
    w = torch.randn(f["batch"], f["seq"], f["d_model"], generator=g)
    mask = torch.ones(f["seq"], f["seq"], dtype=torch.bool).tril()
    positions = torch.arange(f["seq"], dtype=torch.int64)

    dev = torch_xla.device()
    model = model.to(dev)
    h, w, mask, positions = (t.to(dev) for t in (h, w, mask, positions))
    torch_xla.sync()
    xm.wait_device_ops()
    t_device = time.perf_counter()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(h, mask, positions)
        loss = (out * w).sum()
        loss.backward()
        t_traced = time.perf_counter()
        torch_xla.sync()
        xm.wait_device_ops()
        return out, loss, t_traced

    n0, c0 = xla_compiles()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    out, loss, t_traced = step()
    t1 = time.perf_counter()
    cpu1 = time.process_time()
    n1, c1 = xla_compiles()

    for _ in range(args.warmup):
        step()
    n2, _ = xla_compiles()
    times = []
    for _ in range(args.steps):
        s = time.perf_counter()
        out, loss, _ = step()
        times.append(time.perf_counter() - s)
    n3, _ = xla_compiles()

    result = {
        "first_call_s": t1 - t0,
        "trace_s": t_traced - t0,
        "sync_s": t1 - t_traced,
        "first_call_xla_compile_s": c1 - c0,
        "first_call_cpu_s": cpu1 - cpu0,
        "compiles_first_call": n1 - n0,
        "compiles_warmup": n2 - n1,
        "compiles_timed_steps": n3 - n2,
        "step_s": statistics.median(times),
        "step_min_s": min(times),
        "step_all_s": times,
        "steps": args.steps,
        "warmup": args.warmup,
        "import_s": t_import - t_start,
        "setup_s": t_device - t_import,
    }
    if args.dump:
        names = [n for n, _ in model.named_parameters()]
        picked = {"first": 0, "middle": args.layers // 2, "last": args.layers - 1}
        keep = tuple(f"layers.{picked[k]}." for k in COMPARED_LAYERS) + ("final_norm.",)
        grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if n.startswith(keep)}
        norms = torch.stack([model.get_parameter(n).grad.detach().norm() for n in names]).cpu()
        # the program of one step (loss and gradients), before the sync: equal hashes, same program
        import hashlib

        model.zero_grad(set_to_none=True)
        loss2 = (model(h, mask, positions) * w).sum()
        loss2.backward()
        hlo = torch_xla._XLAC._get_xla_tensors_hlo([loss2] + [p.grad for p in model.parameters()])
        result["hlo_lines"] = len(hlo.splitlines())
        result["hlo_sha256"] = hashlib.sha256(hlo.encode()).hexdigest()[:16]
        torch.save({"out": out.detach().cpu(), "loss": loss.detach().cpu(), "grads": grads,
                    "grad_norm_names": names, "grad_norms": norms}, args.dump)
        result["loss"] = float(loss.detach().cpu())
    result["worker_s"] = time.perf_counter() - t_start
    return result


# --------------------------------------------------------------------------- driver

def make_loop2scan(outdir: str) -> dict:
    """Rewrite the model file with loop2scan (as the Flax benchmark does); the file and the loop statuses."""
    import loop2scan

    with open(MODEL_FILE, encoding="utf-8") as f:
        text = f.read()
    result = loop2scan.rewrite_source(text, "torch_xla")
    loops = [{"line": lp.line, "status": lp.status, "code": lp.code, "target": getattr(lp, "target", None)}
             for lp in result.loops]
    info = {"loops": loops, "file": None, "error": getattr(result, "error", None), "emits_scan_layers": False}
    if result.new_text is None:
        return info
    info["emits_scan_layers"] = "scan_layers(" in result.new_text
    path = os.path.join(outdir, os.path.basename(MODEL_FILE))
    with open(path, "w", encoding="utf-8") as f:
        f.write(result.new_text)
    info["file"] = path
    return info


def run_worker(variant: str, variant_file: str, layers: int, steps: int, warmup: int, dump: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--variant", variant,
           "--variant-file", variant_file, "--layers", str(layers), "--steps", str(steps), "--warmup", str(warmup)]
    if dump:
        cmd += ["--dump", dump]
    env = dict(os.environ)
    env.update(PJRT_DEVICE="CPU", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=REPO_ROOT, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    wall = time.perf_counter() - t0
    warnings = [line.strip() for line in proc.stderr.splitlines()
                if "warn" in line.lower() or "slow compile" in line.lower()]
    # torch_xla says which device it defaults to; that line is expected
    warnings = [x for x in warnings if "Defaulting to PJRT_DEVICE" not in x]
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    out["stderr_warnings"] = sorted(set(warnings))[:20]
    return out


def compare(dumps: dict[str, str]) -> dict:
    """Maximum absolute differences of each scan variant's output, loss and gradients from the loop's."""
    import torch

    data = {v: torch.load(p) for v, p in dumps.items() if p and os.path.exists(p)}
    out: dict = {}
    ref = data.get("loop")
    if ref is None:
        return {"error": "no loop output"}
    out["out_max_abs"] = float(ref["out"].abs().max())
    out["loss_loop"] = float(ref["loss"])
    for v in ("loop2scan", "handwritten"):
        d = data.get(v)
        if d is None:
            out[v] = None
            continue
        grad_diff = max(float((d["grads"][n] - g).abs().max()) for n, g in ref["grads"].items())
        grad_rel = max(float((d["grads"][n] - g).abs().max() / max(float(g.abs().max()), 1e-30))
                       for n, g in ref["grads"].items())
        norm_rel = float(((d["grad_norms"] - ref["grad_norms"]).abs() / ref["grad_norms"].clamp_min(1e-30)).max())
        out[v] = {
            "out_max_abs_diff": float((d["out"] - ref["out"]).abs().max()),
            "loss": float(d["loss"]),
            "loss_abs_diff": float((d["loss"] - ref["loss"]).abs()),
            "grad_max_abs_diff": grad_diff,
            "grad_max_rel_diff": grad_rel,
            "grad_norm_max_rel_diff": norm_rel,
            "same_parameter_names": d["grad_norm_names"] == ref["grad_norm_names"],
        }
    return out


def aggregate(measurements: list[dict], sizes: list[int]) -> tuple[list[dict], list[dict]]:
    points, derived = [], []
    for size in sizes:
        per = {}
        for v in VARIANTS:
            ms = [m for m in measurements if m["layers"] == size and m["variant"] == v and "error" not in m]
            row = {
                "layers": size, "variant": v,
                "first_call_s": min_median([m["first_call_s"] for m in ms]),
                "trace_s": min_median([m["trace_s"] for m in ms]),
                "first_call_xla_compile_s": min_median([m["first_call_xla_compile_s"] for m in ms]),
                "first_call_cpu_s": min_median([m["first_call_cpu_s"] for m in ms]),
                "step_s": min_median([m["step_s"] for m in ms]),
                "compiles_first_call": sorted({m["compiles_first_call"] for m in ms}),
                "compiles_warmup": sorted({m["compiles_warmup"] for m in ms}),
                "compiles_timed_steps": sorted({m["compiles_timed_steps"] for m in ms}),
                "errors": [m["error"] for m in measurements
                           if m["layers"] == size and m["variant"] == v and "error" in m],
            }
            points.append(row)
            per[v] = row

        def ratio(a, b, key, stat="median"):
            if per[a][key] is None or per[b][key] is None:
                return None
            return per[a][key][stat] / per[b][key][stat]

        def paired(a, b, key):
            """Median over repetitions of a / b measured in the same repetition."""
            rs = []
            for rep in sorted({m["rep"] for m in measurements}):
                x = [m[key] for m in measurements if m["layers"] == size and m["variant"] == a
                     and m["rep"] == rep and key in m]
                y = [m[key] for m in measurements if m["layers"] == size and m["variant"] == b
                     and m["rep"] == rep and key in m]
                if x and y and y[0] > 0:
                    rs.append(x[0] / y[0])
            return statistics.median(rs) if rs else None

        derived.append({
            "layers": size,
            "loop_over_loop2scan_first_call": ratio("loop", "loop2scan", "first_call_s"),
            "loop_over_loop2scan_first_call_min": ratio("loop", "loop2scan", "first_call_s", "min"),
            "loop_over_handwritten_first_call": ratio("loop", "handwritten", "first_call_s"),
            "loop2scan_over_handwritten_first_call": ratio("loop2scan", "handwritten", "first_call_s"),
            "loop2scan_over_handwritten_first_call_paired": paired("loop2scan", "handwritten", "first_call_s"),
            "loop_over_loop2scan_first_call_cpu": ratio("loop", "loop2scan", "first_call_cpu_s"),
            "loop2scan_over_handwritten_first_call_cpu_paired": paired("loop2scan", "handwritten", "first_call_cpu_s"),
            "loop2scan_over_loop_step": ratio("loop2scan", "loop", "step_s"),
            "loop2scan_over_handwritten_step": ratio("loop2scan", "handwritten", "step_s"),
            "loop2scan_over_handwritten_step_paired": paired("loop2scan", "handwritten", "step_s"),
        })
    return points, derived


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "torch_xla"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def table(points: list[dict], derived: list[dict]) -> str:
    lines = ["  L  variant       first call median / min (s)   step median (s)   XLA compiles (first/warm-up/timed)"]
    for p in points:
        fc, st = p["first_call_s"], p["step_s"]
        comp = "/".join(",".join(map(str, p[k])) or "-"
                        for k in ("compiles_first_call", "compiles_warmup", "compiles_timed_steps"))
        lines.append(f"{p['layers']:>3}  {p['variant']:<12}  {fmt(fc and fc['median']):>8} / {fmt(fc and fc['min']):<8}"
                     f"            {fmt(st and st['median'], '.3f'):>8}          {comp}")
    lines.append("  L  loop/loop2scan first call   loop2scan/handwritten first call (paired)   "
                 "loop2scan/loop step   loop2scan/handwritten step (paired)")
    for d in derived:
        lines.append(f"{d['layers']:>3}  {fmt(d['loop_over_loop2scan_first_call']):>10}"
                     f"                  {fmt(d['loop2scan_over_handwritten_first_call'])} "
                     f"({fmt(d['loop2scan_over_handwritten_first_call_paired'])})"
                     f"                        {fmt(d['loop2scan_over_loop_step'])}"
                     f"                  {fmt(d['loop2scan_over_handwritten_step'])} "
                     f"({fmt(d['loop2scan_over_handwritten_step_paired'])})")
    return "\n".join(lines)


def run(quick: bool = False, sizes: list[int] | None = None, repeats: int | None = None,
        steps: int = STEPS, warmup: int = WARMUP) -> dict:
    sizes = list(sizes or (QUICK_SIZES if quick else SIZES))
    reps = repeats or (1 if quick else 3)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    machine = machine_info()
    machine["versions"].update(versions())
    measurements: list[dict] = []
    comparisons: dict = {}
    name = NAME + ("_quick" if quick else "")
    result: dict = {}

    def save(complete: bool) -> None:
        points, derived = aggregate(measurements, sizes)
        result.clear()
        result.update({
            "benchmark": NAME,
            "date": now_iso(),
            "quick": quick,
            "complete": complete,
            "machine": machine,
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
            "elapsed_s": time.perf_counter() - t_start,
            "method": {
                "model": "benchmarks/torch_xla_decoder_model.py: pre-norm blocks (LayerNorm, causal self-attention "
                         "with rotary embeddings, GELU MLP), a bool mask and int64 positions passed to every block",
                "fixed": FIXED,
                "device": "XLA CPU (PJRT_DEVICE=CPU)",
                "step": "zero_grad(set_to_none); loss = (model(h, mask, positions) * w).sum(); loss.backward(); "
                        "torch_xla.sync(); xm.wait_device_ops()",
                "first_call": "wall time of the first step, from the model and inputs on the device to the end of "
                              "its sync (tracing + XLA compile + run)",
                "step_time": f"median of {steps} steps after {warmup} warm-up steps",
                "process": "one fresh process per measurement (this script with --worker)",
                "repetitions": reps,
                "variant_orders": [[VARIANTS[i] for i in ORDERS[r % len(ORDERS)]] for r in range(reps)],
                "aggregate": "min and median over repetitions; paired ratios: median over repetitions of the "
                             "ratio of the two variants measured in the same repetition",
                "handwritten": "subclass of the model's Decoder: scan_layers over adapter modules holding one "
                               "block with the mask and positions as non-persistent buffers (is_layer_pure left "
                               "at its default, as in the loop2scan output)",
            },
            "sizes": sizes,
            "rewrite": rewrite,
            "points": points,
            "derived": derived,
            "outputs_compared": comparisons,
            "measurements": measurements,
        })
        write_result(name, result)

    with tempfile.TemporaryDirectory(prefix="l2s-txla-bench-") as tmp:
        rewrite = make_loop2scan(tmp)
        files = {"loop": MODEL_FILE, "loop2scan": rewrite["file"], "handwritten": MODEL_FILE}
        rewrite = {k: v for k, v in rewrite.items() if k != "file"} | {"rewritten": rewrite["file"] is not None}
        if not rewrite["rewritten"] or not rewrite["emits_scan_layers"]:
            log(f"[torch_xla decoder] loop2scan did not rewrite the model: {rewrite}")
        total = len(sizes) * len(VARIANTS) * reps
        done = 0
        for rep in range(reps):
            order = [VARIANTS[i] for i in ORDERS[rep % len(ORDERS)]]
            for size in sizes:
                dumps: dict[str, str] = {}
                for variant in order:
                    done += 1
                    dump = os.path.join(tmp, f"{variant}_{size}.pt") if str(size) not in comparisons else None
                    load1 = os.getloadavg()[0]
                    if files[variant] is None:
                        m = {"error": f"no {variant} variant"}
                    else:
                        m = run_worker(variant, files[variant], size, steps, warmup, dump)
                    m.update({"layers": size, "variant": variant, "rep": rep, "load1_before": load1,
                              "load1_after": os.getloadavg()[0]})
                    measurements.append(m)
                    if "error" in m:
                        log(f"[torch_xla decoder] {done}/{total} L={size} {variant}: ERROR {m['error']}")
                    else:
                        if dump:
                            dumps[variant] = dump
                        log(f"[torch_xla decoder] {done}/{total} L={size} {variant}: first call "
                            f"{m['first_call_s']:.2f} s (trace {m['trace_s']:.2f} s, XLA compile "
                            f"{m['first_call_xla_compile_s']:.2f} s), step {m['step_s']:.3f} s, compiles "
                            f"{m['compiles_first_call']}/{m['compiles_warmup']}/{m['compiles_timed_steps']}, "
                            f"load {m['load1_after']:.1f}")
                        for wline in m.get("stderr_warnings", []):
                            log(f"    warning: {wline[:200]}")
                    save(False)
                if str(size) not in comparisons and "loop" in dumps:
                    comparisons[str(size)] = compare(dumps)
                    hashes = {m["variant"]: m.get("hlo_sha256") for m in measurements
                              if m["layers"] == size and m["rep"] == rep and "error" not in m}
                    comparisons[str(size)]["hlo_sha256"] = hashes
                    comparisons[str(size)]["loop2scan_same_program_as_handwritten"] = (
                        None if not hashes.get("loop2scan") or not hashes.get("handwritten")
                        else hashes["loop2scan"] == hashes["handwritten"])
                    log(f"[torch_xla decoder] L={size} outputs: {json.dumps(comparisons[str(size)])}")
                    for p in dumps.values():
                        os.remove(p)
                    save(False)
    save(True)
    log(table(result["points"], result["derived"]))
    log(f"[torch_xla decoder] results: benchmarks/results/{name}.json ({result['elapsed_s']:.0f} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="L = 8, 16; 1 repetition")
    ap.add_argument("--sizes", help="comma-separated numbers of layers (default 8,16,32,64)")
    ap.add_argument("--repeats", type=int, help="fresh processes per (variant, L) (default 3; 1 with --quick)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"timed steps per process (default {STEPS})")
    ap.add_argument("--warmup", type=int, default=WARMUP, help=f"steps between the first and the timed ones "
                                                               f"(default {WARMUP})")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--variant-file", help=argparse.SUPPRESS)
    ap.add_argument("--layers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    run(quick=args.quick, sizes=sizes, repeats=args.repeats, steps=args.steps, warmup=args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
