"""Long differential fuzzing run: N labelled programs from the grammar in
``tests/fuzz/grammar.py``, each rewritten and judged by ``tests/fuzz/harness.py``
(statically, then original against rewrite: outputs and VJP gradients, eagerly
and under ``jax.jit``).

    python benchmarks/fuzz_long.py                 # 10,000 programs
    python benchmarks/fuzz_long.py --n 2000 --jobs 2
    python benchmarks/fuzz_long.py --start 50000   # another slice of seeds
    python benchmarks/fuzz_long.py --class bool-mask --n 300   # one class of programs
    python benchmarks/fuzz_long.py --class torch --n 300 --out benchmarks/results/fuzz_long_torch.json

Program ``i`` is ``generate(start + i)`` (``generate(start + i, klass=...)``
with ``--class``): any program of the summary can be rebuilt from its seed.
Programs of every class are drawn (``tests/fuzz/grammar.py``: the original
grammar, the classes of real-code failures, multi-module packages), but for
the classes of ``grammar.OWN_RUN`` (``torch``: PyTorch/XLA models and
functions, run on the XLA device, ``PJRT_DEVICE=CPU`` unless set), which only
``--class`` selects; the summary also gives the counts per class.  Programs run in chunks in worker processes (restarted
every few chunks, so JAX's caches do not grow without bound); after every chunk
the summary so far is printed and written to
``benchmarks/results/fuzz_long.json``: counts of programs, must-rewrite and
must-decline programs, programs discarded because the original raises,
rewritten programs, declines by code, mismatches, crashes, wrong rewrites, the
must-rewrite share, counts per class, the seeds and texts of the first
failures, one example program per decline code, the time per program, and
the loop2scan revision the run judged (the commit, and whether its
``loop2scan/`` or ``codemods/`` had uncommitted changes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests")
DEFAULT_OUT = os.path.join(HERE, "results", "fuzz_long.json")


def _setup_path() -> None:
    for p in (TESTS, ROOT):
        if p not in sys.path:
            sys.path.insert(0, p)


def tool_revision() -> dict:
    """The commit of the checkout and whether the tool's sources differ from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"),
            "tool_sources_modified": bool(git("status", "--porcelain", "--", "loop2scan", "codemods"))}


def run_chunk(task):
    """Run seeds ``[lo, hi)``; returns (Tally, failing seeds, feature counts)."""
    lo, hi, klass = task
    _setup_path()
    import logging

    logging.disable(logging.CRITICAL)  # the must-decline programs log from their loops
    from fuzz.grammar import generate
    from fuzz.harness import Tally, run_program

    tally = Tally()
    failing = []
    features: dict[str, int] = {}
    for seed in range(lo, hi):
        program = generate(seed, klass=klass)
        for f in program.features:
            features[f] = features.get(f, 0) + 1
        outcome = run_program(program)
        tally.add(program, outcome)
        if outcome.failed:
            failing.append({"seed": seed, "class": program.klass, "kind": outcome.failure_kind,
                            "failure": "\n".join(outcome.failures)[:2000], "program": program.describe()})
    return tally, failing, features


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="number of programs (default 10000)")
    ap.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--chunk", type=int, default=50, help="programs per chunk (default 50)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON summary path (default benchmarks/results/fuzz_long.json)")
    ap.add_argument("--class", dest="klass", default=None,
                    help="only programs of this class (grammar.CLASSES; `torch` is drawn only this way)")
    args = ap.parse_args(argv)

    _setup_path()
    from fuzz.grammar import CLASSES
    from fuzz.harness import Tally

    if args.klass is not None and args.klass not in CLASSES:
        ap.error(f"--class {args.klass}: not a class of the grammar ({', '.join(CLASSES)})")

    import multiprocessing as mp

    tasks = [(lo, min(lo + args.chunk, args.start + args.n), args.klass)
             for lo in range(args.start, args.start + args.n, args.chunk)]
    revision = tool_revision()
    total = Tally()
    failing: list = []
    features: dict[str, int] = {}
    t0 = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def write(done: bool) -> dict:
        wall = time.perf_counter() - t0
        summary = {
            "complete": done,
            "seeds": [args.start, args.start + args.n],
            "class": args.klass,
            "loop2scan_revision": revision,
            **total.summary(),
            "wall_seconds": round(wall, 1),
            "wall_seconds_per_program": round(wall / total.programs, 3) if total.programs else 0.0,
            "jobs": args.jobs,
            "failing_seeds": [f["seed"] for f in failing],
            "failing_seeds_by_class": {k: sorted(f["seed"] for f in failing if f["class"] == k)
                                       for k in sorted({f["class"] for f in failing})},
            "failures": failing[:20],
            "declined_must_rewrite_examples": {code: {"message": msg, "program": src}
                                               for code, (msg, src) in sorted(total.declined_examples.items())},
            "features": dict(sorted(features.items())),
        }
        text = json.dumps(summary, indent=1)
        # messages name the package copies a program was run from: keep their paths inside the package
        text = re.sub(r"(?:[A-Za-z]:)?[^\s\"'(]*l2s_fuzz_[^/\\\s\"']*[/\\](?:before|after)[/\\]", "", text)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
        return summary

    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, maxtasksperchild=4) as pool:
        for tally, fails, feats in pool.imap_unordered(run_chunk, tasks):
            total.merge(tally)
            failing.extend(fails)
            for k, v in feats.items():
                features[k] = features.get(k, 0) + v
            s = write(False)
            print(f"{s['programs']:>6}/{args.n} programs  share {s['must_rewrite_share']:.3f}  "
                  f"mismatches {s['mismatches']}  wrong rewrites {s['wrong_rewrites']}  crashes {s['crashes']}  "
                  f"{s['wall_seconds_per_program']:.2f} s/program", flush=True)
    s = write(True)
    keys = ("programs", "must_rewrite", "must_decline", "discarded_original_raises", "must_rewrite_run", "rewritten",
            "must_rewrite_share", "declined_must_rewrite_by_code", "must_decline_loops_by_status_code", "mismatches",
            "wrong_rewrites", "crashes", "wall_seconds", "wall_seconds_per_program", "seconds_per_program")
    print(json.dumps({k: s[k] for k in keys}, indent=1))
    for klass, counts in s["by_class"].items():
        print(f"{klass:>15}: {json.dumps(counts, sort_keys=True)}")
    print(f"failing seeds: {s['failing_seeds'][:50]}")
    return 1 if total.failed else 0


if __name__ == "__main__":
    sys.exit(main())
