"""Plots of the results (PNG, in benchmarks/results/)."""

from __future__ import annotations

import os

from common import RESULTS_DIR

COLORS = {"loop": "tab:red", "rewritten": "tab:blue", "handwritten": "tab:green"}
MARKERS = {"loop": "o", "rewritten": "s", "handwritten": "^"}
LABELS = {"loop": "Python loop", "rewritten": "loop2scan output", "handwritten": "hand-written scan"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _machine_caption(m: dict) -> str:
    v = m["versions"]
    return f"{m['cpu']}, {m['cores']} cores; Python {m['python']}, jax {v.get('jax')}"


def compile_plots(data: dict) -> list[str]:
    plt = _plt()
    from matplotlib.ticker import NullLocator, ScalarFormatter

    out = []
    wls = data["workloads"]
    for key, fname, ylabel, scale in (("compile_s", "compile_time.png", "compile time (s)", 1.0),
                                      ("run_s", "run_time.png", "run time per call (ms)", 1e3)):
        fig, axes = plt.subplots(1, len(wls), figsize=(5.2 * len(wls), 4.2), squeeze=False)
        for ax, wl in zip(axes[0], wls):
            for variant in ("loop", "rewritten", "handwritten"):
                pts = sorted((p["size"], p[key]) for p in data["points"]
                             if p["workload"] == wl["name"] and p["variant"] == variant and p[key])
                if not pts:
                    continue
                xs = [s for s, _ in pts]
                med = [a["median"] * scale for _, a in pts]
                lo = [a["min"] * scale for _, a in pts]
                ax.plot(xs, med, marker=MARKERS[variant], color=COLORS[variant], label=LABELS[variant],
                        linestyle="--" if variant == "rewritten" else "-")
                ax.fill_between(xs, lo, med, color=COLORS[variant], alpha=0.15, linewidth=0)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(wl["sizes"])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(f"{wl['size_name']} (trip count)")
            ax.set_ylabel(ylabel)
            ax.set_title(wl["title"].replace("`", ""), fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{ylabel.split(' (')[0].capitalize()}: median of fresh processes (band: min)\n"
                     f"{_machine_caption(data['machine'])}", fontsize=9)
        fig.tight_layout()
        path = os.path.join(RESULTS_DIR, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def throughput_plot(data: dict) -> list[str]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    names = [f"loop2scan rewrite\n(--jobs {data['jobs']})", f"libcst.parse_module\n(Pool({data['jobs']}))"]
    med = [data["loop2scan_s"]["median"], data["libcst_parse_s"]["median"]]
    best = [data["loop2scan_s"]["best"], data["libcst_parse_s"]["best"]]
    bars = ax.barh(names, med, color=["tab:blue", "tab:gray"], label="median")
    ax.scatter(best, names, color="black", marker="|", s=200, zorder=3, label="best")
    for bar, m in zip(bars, med):
        ax.text(bar.get_width() * 1.02, bar.get_y() + bar.get_height() / 2, f" {m:.1f} s", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_xlim(0, max(med) * 1.3)
    t = data["tree"]
    ax.set_title(f"Whole-tree preview of jax + flax ({t['files']} files, {t['lines']:,} lines): "
                 f"{data['speedup_median']:.1f}x\n{_machine_caption(data['machine'])}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path = os.path.join(RESULTS_DIR, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
