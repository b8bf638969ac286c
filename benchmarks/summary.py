"""The markdown summary (benchmarks/results/summary.md) of whatever results exist."""

from __future__ import annotations

import os

from common import RESULTS_DIR, machine_line, read_result

VARIANT_HEAD = ("loop", "loop2scan", "hand-written")


def _s(x: float | None) -> str:
    """Seconds, 3 significant digits."""
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x:.3f} s"


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    ms = x * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"


def _x(r: float | None, digits: int = 1) -> str:
    return "–" if r is None else f"{r:.{digits}f}×"


def _pf(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**FAIL**")


def _med(agg: dict | None) -> float | None:
    return agg["median"] if agg else None


def throughput_section(t: dict) -> list[str]:
    tree = t["tree"]
    loops = t["loops"]
    by = loops.get("by_status") or {}
    n = t["repetitions"]
    out = [
        f"**Whole-tree preview** of the installed {' + '.join(tree.get('packages', ['jax', 'flax']))} sources "
        f"({tree['files']} files, "
        f"{tree['lines']:,} lines), {t['jobs']} processes, wall time of the whole command, "
        f"best / median of {n}:",
        "",
        "| command | best | median |",
        "|---|---:|---:|",
        f"| `loop2scan rewrite --no-diff -q --jobs {t['jobs']}` | {_s(t['loop2scan_s']['best'])} | "
        f"{_s(t['loop2scan_s']['median'])} |",
        f"| read + `libcst.parse_module` every file, `multiprocessing.Pool({t['jobs']})` | "
        f"{_s(t['libcst_parse_s']['best'])} | {_s(t['libcst_parse_s']['median'])} |",
        f"| speed-up of loop2scan over parsing alone | {_x(t['speedup_best'])} | {_x(t['speedup_median'])} |",
        "",
    ]
    if t.get("loop2scan_cpu_s"):
        out += [f"CPU time (user + system, all processes), median: loop2scan {_s(t['loop2scan_cpu_s']['median'])}, "
                f"libcst parsing {_s(t['libcst_parse_cpu_s']['median'])}: {_x(t['cpu_ratio_median'])} less.", ""]
    out += [
        f"Loops found: {loops['total']:,}: {by.get('rewritten', 0)} rewritten (in "
        f"{loops.get('changed_files')} files), {by.get('declined', 0)} declined, "
        f"{by.get('not-candidate', 0):,} not array loops"
        + "".join(f", {v} {k}" for k, v in by.items() if k not in ("rewritten", "declined", "not-candidate"))
        + ".",
    ]
    return out


def compile_section(c: dict) -> list[str]:
    out = []
    reps = c["method"]["repetitions"]
    run_desc = c["method"]["run"].split(", after")[0].replace(" of the compiled function", "")
    for wl in c["workloads"]:
        fixed = ", ".join(f"{k}={v}" for k, v in wl["fixed"].items())
        out.append(f"**{wl['title']}** ({fixed}); median of {reps} fresh process{'es' if reps > 1 else ''}; "
                   f"compile = `jax.jit(f).lower(*args).compile()`, run = {run_desc}:")
        out.append("")
        sz = wl["size_name"]
        out.append(f"| {sz} | compile: loop | loop2scan | hand-written | loop ÷ loop2scan | loop2scan ÷ hand "
                   f"| run: loop | loop2scan | hand-written | loop2scan ÷ hand |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in wl["sizes"]:
            p = {q["variant"]: q for q in c["points"] if q["workload"] == wl["name"] and q["size"] == size}
            d = next(x for x in c["derived"] if x["workload"] == wl["name"] and x["size"] == size)
            cells = [str(size)]
            cells += [_s(_med(p[v]["compile_s"])) for v in ("loop", "rewritten", "handwritten")]
            cells += [_x(d["loop_over_rewritten_compile"]), _x(d["rewritten_over_handwritten_compile"], 2)]
            cells += [_ms(_med(p[v]["run_s"])) for v in ("loop", "rewritten", "handwritten")]
            cells += [_x(d["rewritten_over_handwritten_run"], 2)]
            out.append("| " + " | ".join(cells) + " |")
        rows = [d for d in c["derived"] if d["workload"] == wl["name"]]
        same = [d.get("rewritten_same_program_as_handwritten") for d in rows]
        if same and all(x is True for x in same):
            out.append("")
            out.append("The loop2scan output and the hand-written scan lower to the same StableHLO program at every "
                       f"{wl['size_name']} (equal hashes): their differences are measurement noise.")
        elif any(x is False for x in same):
            out.append("")
            out.append("The loop2scan output lowers to a different program than the hand-written scan at "
                       f"{wl['size_name']} = "
                       + ", ".join(str(d["size"]) for d in rows if d.get("rewritten_same_program_as_handwritten")
                                   is False) + ".")
        bad = [d for d in rows if d["outputs_agree"] is False]
        errs = [p for p in c["points"] if p["workload"] == wl["name"] and p["errors"]]
        if bad:
            out.append("")
            out.append(f"Outputs differ between variants at {sz} = "
                       f"{', '.join(str(d['size']) for d in bad)}.")
        if errs:
            out.append("")
            out.append("Errors: " + "; ".join(f"{p['variant']} {sz}={p['size']}: {p['errors'][0]}" for p in errs))
        out.append("")
    return out[:-1]


def startup_section(s: dict) -> list[str]:
    third = ", ".join(f"{r['module']} {r['cumulative_ms']:.0f} ms" for r in s["top_third_party_packages"][:3])
    forbidden = s["forbidden_imported_by_cli"] + s["forbidden_imported_on_rewrite_path"]
    path_top = ", ".join(f"`{r['module']}` {r['cumulative_ms']:.0f} ms"
                         for r in s.get("rewrite_path_imports_cumulative", [])[:3])
    path_self = ", ".join(f"`{r['module']}` ({r['self_ms']:.0f} ms)" for r in s.get("rewrite_path_imports_self", [])[:1])
    return [
        f"**Startup** (pre-commit-sized run: `loop2scan rewrite` on 3 small changed files, the examples; "
        f"best / median of {s['repetitions']}):",
        "",
        "| | best | median |",
        "|---|---:|---:|",
        f"| `loop2scan rewrite jax_rnn.py jax_lstm.py jax_cumulative.py` | {_s(s['rewrite_s']['best'])} | "
        f"{_s(s['rewrite_s']['median'])} |",
        f"| bare `python -c pass`, for reference | {_s(s['bare_python_s']['best'])} | "
        f"{_s(s['bare_python_s']['median'])} |",
        "",
        f"`import loop2scan.cli` takes {s['import_loop2scan_cli_ms']:.0f} ms (`-X importtime`; largest: {third}); "
        f"framework modules (jax, flax, torch, numpy, ...) imported on the rewrite path: "
        f"{', '.join(forbidden) if forbidden else 'none'}."
        + (f" The whole rewrite run imports {path_top}; the largest single module is {path_self}."
           if path_top else ""),
    ]


def _us(x: float | None) -> str:
    """A short duration in microseconds (milliseconds from 1 ms)."""
    if x is None:
        return "–"
    if x >= 1e-3:
        return _ms(x)
    us = x * 1e6
    return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"


def _from(n: int | None, last: int) -> str:
    return f"never (up to {last})" if n is None else f"n ≥ {n}"


def short_section(r: dict) -> list[str]:
    reps = r["method"]["repetitions"]
    ns = r["trip_counts"]
    a = r["analysis"]
    titles = {b["name"]: b["title"] for b in r["bodies"]}
    out = [
        f"**Short static loops: Python loop vs `lax.scan`, by trip count n** (`short_loops.py`). "
        f"Compile = `jax.jit(f).lower(*args).compile()`, cold, a fresh process per form, median of {reps}; "
        f"run = median time per call, the two forms timed interleaved in each process, median of "
        f"{2 * reps} processes; scan ÷ loop below 1: the scan is cheaper. The compile ratio judged below is "
        "the CPU-time one (median over repetitions of the ratio of the two processes of one repetition); "
        "`while`: loops left in the compiled scan (XLA removes a one-trip loop).",
    ]
    for body in [b["name"] for b in r["bodies"]]:
        out += ["", f"*{body}*: {titles[body]}", "",
                "| n | compile: loop | scan | scan ÷ loop | scan ÷ loop (CPU) | run: loop | scan | scan ÷ loop "
                "| `while` |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in (q for q in r["points"] if q["body"] == body):
            loops = p["scan"]["compiled_while_loops"]
            ctx = " (context)" if p["n"] in r.get("context_only", []) else ""
            out.append("| " + " | ".join([
                f"{p['n']}{ctx}", _s(_med(p["loop"]["compile_s"])), _s(_med(p["scan"]["compile_s"])),
                _x(p["scan_over_loop_compile"], 2), _x(p["scan_over_loop_compile_cpu_paired"], 2),
                _us(_med(p["loop"]["run_s"])), _us(_med(p["scan"]["run_s"])), _x(p["scan_over_loop_run"], 2),
                ",".join(str(x) for x in loops) or "–"]) + " |")
        bad = [p for p in r["points"] if p["body"] == body and (p["errors"] or p["outputs_agree"] is False)]
        if bad:
            out += ["", "Problems: " + "; ".join(
                f"n={p['n']}: " + ("; ".join(p["errors"]) if p["errors"] else "loop and scan outputs differ")
                for p in bad)]
    last = ns[-1]
    out += ["", f"Smallest trip count from which the scan runs no slower (run ratio ≤ {1 + a['run_tolerance']:g}) "
                f"and compiles as fast or faster (compile CPU-time ratio ≤ {1 + a['compile_tolerance']:g}) "
                "at that trip count and every larger one measured:", "",
            "| body | runs no slower from | compiles as fast from | both from | both, no tolerance |",
            "|---|---:|---:|---:|---:|"]
    for body, v in a["per_body"].items():
        out.append(f"| {body} | {_from(v['run'], last)} | {_from(v['compile'], last)} | "
                   f"{_from(v['both'], last)} | {_from(v['both_strict'], last)} |")
    out.append(f"| **every body** | {_from(a['all_bodies_run'], last)} | {_from(a['all_bodies_compile'], last)} | "
               f"{_from(a['all_bodies_both'], last)} | {_from(a['all_bodies_both_strict'], last)} |")
    rec = a.get("recommendation")
    if rec:
        out += ["", f"**Recommended default `min-trip-count`: {rec['value']}.** {rec['reason']}"]
    return out


def eager_section(r: dict) -> list[str]:
    reps = r["method"]["repetitions"]
    forms = {f["name"]: f["title"] for f in r["forms"]}
    out = [f"**Eager calls (no `jit`) of a function whose loop became a scan** (`eager_calls.py`); a fresh "
           f"process per measurement, median of {reps}; steady = median of the calls after the first; "
           "compiles = backend compilations (`jax.monitoring` events `backend_compile`) of the call:", ""]
    out += ["| function | size | form | first call | compiles | steady call | compiles per call | "
            "steady ÷ loop |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for case in r["cases"]:
        for size in case["sizes"]:
            pts = {p["form"]: p for p in r["points"] if p["case"] == case["name"] and p["size"] == size}
            loop = _med(pts["loop"]["steady_s"]) if "loop" in pts else None
            for form in forms:
                p = pts.get(form)
                if not p:
                    continue
                steady = _med(p["steady_s"])
                per_call = _med(p["steady_compiles_per_call"])
                out.append("| " + " | ".join([
                    case["name"], f"{case['size_name']}={size}", forms[form], _ms(_med(p["first_call_s"])),
                    ",".join(str(x) for x in p["first_call_compiles"]) or "–", _ms(steady),
                    "–" if per_call is None else f"{per_call:g}",
                    _x(steady / loop if steady and loop else None, 2)]) + " |")
    errs = [p for p in r["points"] if p["errors"] or p.get("outputs_agree") is False]
    if errs:
        out += ["", "Problems: " + "; ".join(
            f"{p['case']} {p['size']} {p['form']}: " + (p["errors"][0] if p["errors"] else "outputs differ")
            for p in errs)]
    titles = "; ".join(f"{c['name']}: {c['title']}" for c in r["cases"])
    out += ["", f"Functions: {titles}."]
    return out


def targets_section(t: dict | None, c: dict | None, s: dict | None) -> list[str]:
    rows = []
    if t:
        tg = t["target"]
        rows.append((f"whole-tree preview ≥ {tg['threshold']:g}× faster than parsing with libcst",
                     f"{tg['value']:.2f}×", tg["pass"]))
    if c:
        titles = {w["name"]: w["title"] for w in c["workloads"]}
        reps = c["method"]["repetitions"]
        sizes = {w["name"]: w["size_name"] for w in c["workloads"]}
        for tg in c["targets"]:
            title = titles.get(tg["workload"], tg["workload"])
            if tg["name"] == "loop_vs_scan_compile":
                what = (f"{title}, {tg['description'].split(':')[0]}: loop2scan output compiles "
                        f"≥ {tg['threshold']:g}× faster than the loop")
                val = _x(tg["value"])
            elif tg["name"] == "run_vs_loop":
                what = (f"{title}, {tg['description'].split(':')[0]}: loop2scan output runs no slower than the "
                        "loop (ratio of medians, 5% allowed for noise)")
                val = _x(tg["value"])
            elif tg["name"] == "rewritten_same_program":
                what = f"{title}: loop2scan output lowers to the same program as the hand-written scan"
                val = tg["value"]
            else:
                kind = "compile" if tg["name"].endswith("compile") else "run"
                metric = tg.get("metric", "time")
                what = (f"{title}: loop2scan output {kind} {metric} within 15% of the hand-written scan "
                        f"(ratio measured back to back, median of {reps} repetitions, worst size)")
                sz = sizes[tg["workload"]]
                val = "–" if tg["value"] is None else f"{tg['value']:.2f}× ({sz}={tg['at_size']})"
                extra = []
                if kind == "compile" and tg.get("value_wall_paired") is not None:
                    extra.append(f"wall time: {tg['value_wall_paired']:.2f}× at {sz}={tg['at_size_wall_paired']}")
                if tg.get("value_median") is not None:
                    extra.append(f"ratio of medians: {tg['value_median']:.2f}× at {sz}={tg['at_size_median']}")
                if extra:
                    val += " (" + "; ".join(extra) + ")"
            rows.append((what, val, tg["pass"]))
    if s:
        for tg in s["targets"]:
            if tg["name"] == "startup_wall":
                rows.append((f"pre-commit-sized run under {tg['threshold']:g} s", _s(tg["value"]), tg["pass"]))
            else:
                rows.append(("no jax/flax/torch/numpy import on the rewrite path",
                             ", ".join(tg["value"]) or "none imported", tg["pass"]))
    if not rows:
        return []
    out = ["**Targets:**", "", "| target | measured | result |", "|---|---|---|"]
    out += [f"| {a} | {b} | {_pf(ok)} |" for a, b, ok in rows]
    return out


def write_summary() -> str:
    t = read_result("throughput")
    c = read_result("compile")
    s = read_result("startup")
    sl = read_result("short_loops")
    ec = read_result("eager_calls")
    present = [r for r in (t, c, s, sl, ec) if r]
    if not present:
        raise SystemExit("no results yet: run python benchmarks/run.py")
    lines = [f"Machine: {machine_line(present[0]['machine'])}.", ""]
    revs = {}
    for r in present:
        rev = (r["machine"].get("loop2scan_source") or {})
        key = (rev.get("commit") or "unknown")[:10] + (" with local changes" if rev.get("local_changes") else "")
        revs.setdefault(key, []).append(r["benchmark"])
    if len(revs) > 1:
        m = dict(present[0]["machine"], loop2scan_source=None)
        lines[0] = f"Machine: {machine_line(m)}; the sources changed during the run: " + "; ".join(
            f"{', '.join(parts)} at {k}" for k, parts in revs.items()) + "."
    lines.append("Reproduce with `python benchmarks/run.py` (`--quick` for a smoke run, `--only "
                 "throughput|compile|startup|short|eager` for one part); JSON results and plots are written to "
                 "`benchmarks/results/`.")
    quick = [r["benchmark"] for r in present if r.get("quick")]
    if quick:
        lines.append("")
        lines.append(f"*Quick run ({', '.join(quick)}): one repetition and fewer sizes; not for publication.*")
    busy = []
    for r in present:
        la = r.get("load_average")
        if la and max(la["before"][0], la["after"][0]) > (r["machine"]["cores"] or 1):
            busy.append(f"{r['benchmark']} {la['before'][0]:.1f} → {la['after'][0]:.1f}")
    for r in present:
        peak = [m["load1_after"] for m in r.get("measurements", []) if "load1_after" in m]
        if peak and max(peak) > (r["machine"]["cores"] or 1) and not any(b.startswith(r["benchmark"]) for b in busy):
            busy.append(f"{r['benchmark']} up to {max(peak):.1f}")
    if busy:
        lines.append("")
        lines.append(f"*Other work ran on the machine during the run (1-minute load average, "
                     f"{present[0]['machine']['cores']} cores: {'; '.join(busy)}): absolute times are "
                     f"inflated by it; ratios within one part are measured under the same conditions.*")
    for section, data in ((throughput_section, t), (compile_section, c), (startup_section, s),
                          (short_section, sl), (eager_section, ec)):
        if data:
            lines.append("")
            lines += section(data)
    tg = targets_section(t, c, s)
    if tg:
        lines.append("")
        lines += tg
    text = "\n".join(lines) + "\n"
    path = os.path.join(RESULTS_DIR, "summary.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


if __name__ == "__main__":
    print(open(write_summary(), encoding="utf-8").read())
