"""What a run is asked to rewrite (:class:`Policy`) and how it writes code (:class:`Style`).

Both come from ``[tool.loop2scan]`` (the line length from ``[tool.ruff]`` or
``[tool.black]``) and the command line; the analysis reads the policy, the
emitters the style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: Static trip counts below this are left alone (``L2S701``): measured in
#: ``benchmarks/short_loops.py`` (compile and run time of scan against the loop
#: for small bodies at trip counts 1 to 16; README, "Where a scan pays").
DEFAULT_MIN_TRIP_COUNT = 8

#: ``eager``: how loops in functions that may run outside a JAX transformation are treated.
EAGER_MODES = ("compile-once", "skip", "closure")

#: The line length of emitted code when the project configures none (black's and ruff's default).
DEFAULT_LINE_LENGTH = 88


@dataclass(frozen=True)
class Policy:
    """Which loops pay for a scan.

    ``min_trip_count``: a loop whose trip count is a constant below this is
    left alone.  ``eager``: ``"compile-once"`` rewrites a loop whose function
    may run eagerly only in a form whose eager calls compile the step once
    (declining where that form is not possible); ``"skip"`` declines every loop
    with no JAX transformation seen around it; ``"closure"`` writes every step
    as a closure, for projects whose functions run under ``jax.jit`` out of the
    analysis's sight (an eager call then compiles the step on every call).
    ``assume_pure`` (torch_xla): emit ``is_layer_pure=True`` where the scanned
    layers are the list's own modules (its trace is then reused across calls)."""

    min_trip_count: int = DEFAULT_MIN_TRIP_COUNT
    eager: str = "compile-once"
    # torch_xla: the layers' code is declared free of effects the analysis cannot see, so
    # `scan_layers(..., is_layer_pure=True)` may reuse its trace (never lifts a decline)
    assume_pure: bool = False

    def __post_init__(self) -> None:
        if self.eager not in EAGER_MODES:
            raise ValueError(f"eager must be one of {EAGER_MODES}, not {self.eager!r}")
        if self.min_trip_count < 0:
            raise ValueError("min_trip_count must not be negative")


@dataclass(frozen=True)
class Style:
    """How emitted code is laid out: lines fit ``line_length`` (the project's
    ``[tool.ruff]`` or ``[tool.black]`` ``line-length``), where the code allows."""

    line_length: int = DEFAULT_LINE_LENGTH
    unroll: Optional[int] = None  # passed to every emitted scan (``unroll=`` of jax.lax.scan) when set
    jax: Optional[tuple[int, ...]] = None  # the JAX version emitted code must run on (None: the newest)
    layer_axis_name: str = "layers"  # NNX layer stacks: the sharding name of the stacked axis


DEFAULT_POLICY = Policy()
DEFAULT_STYLE = Style()


def line_length_from(pyproject: Optional[dict]) -> Optional[int]:
    """``line-length`` of ``[tool.ruff]`` (or else ``[tool.black]``) in a parsed ``pyproject.toml``."""
    tools = (pyproject or {}).get("tool", {})
    if not isinstance(tools, dict):
        return None
    for tool in ("ruff", "black"):
        table = tools.get(tool)
        if isinstance(table, dict) and isinstance(table.get("line-length"), int) and table["line-length"] > 0:
            return table["line-length"]
    return None
