"""Per-step outputs: list and tuple accumulators and ``.at[].set`` buffers
(``L2S5xx``).  The forms themselves are recognised by :mod:`..outputs`."""

from __future__ import annotations

from .. import inputs
from ..decline import Code
from ..outputs import OutputAnalysis

CODES = (
    Code("L2S501", "list-accumulator", "a list built in the loop is used in a way a stacked array cannot replace",
        "Only `outs.append(y)` once per step, then `jnp.stack(outs)` / `jnp.array(outs)` / `jnp.concatenate(outs)` / `len(outs)` / `outs[i]` after the loop are understood."),
    Code("L2S502", "accumulator-init", "a list or tuple accumulator does not start empty just before the loop",
        "Start it as `[]` (or `()`) right before the loop and add the initial items after stacking."),
)


def find_accumulators(la) -> None:
    """The accumulators of the loop (``la.accs``), each with its uses after the loop."""
    la.accs = OutputAnalysis(la).find(inputs.counter_name(la, la.iteration))
