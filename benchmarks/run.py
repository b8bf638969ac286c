"""Run the loop2scan benchmark suite.

    python benchmarks/run.py                      # everything (25-40 minutes on 2 cores)
    python benchmarks/run.py --quick              # smoke run (a few minutes)
    python benchmarks/run.py --only compile       # one part: throughput, compile, startup, short or eager (repeatable)
    python benchmarks/run.py --only torch_xla     # the torch_xla decoder (opt-in: needs torch_xla; 20-30 minutes)
    python benchmarks/run.py --summary-only       # redo summary.md and the plots from existing JSON

Writes benchmarks/results/<part>.json, summary.md and the PNG plots.  Run it
with the interpreter of the environment where loop2scan, jax, flax, libcst
and matplotlib are installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS_DIR, check_workloads, log, read_result  # noqa: E402

PARTS = ("throughput", "compile", "startup", "short", "eager")
# parts run only when named with --only (not by a full run)
OPT_IN_PARTS = ("torch_xla",)


def wait_idle(limit_s: float) -> None:
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= cores and time.monotonic() < deadline:
        log(f"   waiting for the machine to become idle (load {os.getloadavg()[0]:.1f}, {cores} cores)")
        time.sleep(15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run: 1 repetition, fewer sizes")
    ap.add_argument("--only", action="append", metavar="PART",
                    help="run only this part: throughput, compile, startup, short (short static loops: "
                         "loop vs scan by trip count), eager (eager calls of scans) or torch_xla (the torch_xla "
                         "decoder: loop vs loop2scan vs scan_layers; opt-in, not part of a full run) "
                         "(repeat or comma-separate)")
    ap.add_argument("--workload", action="append", metavar="NAME",
                    help="compile part: only this registered workload (repeatable)")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild summary.md and the plots (re-aggregating compile.json from its measurements)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each part, wait up to SECONDS for the 1-minute load average to drop below "
                         "the number of cores")
    ap.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    args = ap.parse_args(argv)

    parts: list[str] = []
    for item in args.only or []:
        for p in item.replace("|", ",").split(","):
            p = p.strip()
            if p not in PARTS + OPT_IN_PARTS:
                ap.error(f"unknown part {p!r}; choose from {', '.join(PARTS + OPT_IN_PARTS)}")
            if p not in parts:
                parts.append(p)
    if not parts:
        parts = list(PARTS)
    check_workloads(ap, args.workload)
    if args.summary_only:
        parts = []

    os.makedirs(RESULTS_DIR, exist_ok=True)
    t0 = time.perf_counter()
    for part in parts:
        if args.wait_idle > 0:
            wait_idle(args.wait_idle)
        log(f"== {part}{' (quick)' if args.quick else ''}")
        t_part = time.perf_counter()
        if part == "throughput":
            import throughput

            throughput.run(quick=args.quick)
        elif part == "compile":
            import compile_bench

            compile_bench.run(quick=args.quick, only_workloads=args.workload)
        elif part == "startup":
            import startup

            startup.run(quick=args.quick)
        elif part == "short":
            import short_loops

            short_loops.run(quick=args.quick)
        elif part == "eager":
            import eager_calls

            eager_calls.run(quick=args.quick)
        elif part == "torch_xla":
            import compile_torch_xla_decoder

            compile_torch_xla_decoder.run(quick=args.quick)
        log(f"== {part} done in {time.perf_counter() - t_part:.0f} s")

    if args.summary_only:
        import compile_bench
        from common import write_result

        c = read_result("compile")
        if c and c.get("measurements"):
            write_result("compile", compile_bench.reaggregate(c))
    import summary

    path = summary.write_summary()
    written = [path]
    if not args.no_plots:
        import plots

        c = read_result("compile")
        t = read_result("throughput")
        if c:
            written += plots.compile_plots(c)
        if t:
            written += plots.throughput_plot(t)
    log(f"== total {time.perf_counter() - t0:.0f} s; wrote " + ", ".join(os.path.relpath(p) for p in written))
    with open(path, encoding="utf-8") as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
