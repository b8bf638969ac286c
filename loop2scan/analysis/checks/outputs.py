"""Per-step outputs: list and tuple accumulators and ``.at[].set`` buffers
(``L2S5xx``).  The forms themselves are recognised by :mod:`..outputs`."""

from __future__ import annotations

from .. import inputs
from ..decline import Code
from ..examples import Invalid, Valid
from ..outputs import OutputAnalysis

CODES = (
    Code("L2S501", "list-accumulator", "a list built in the loop is used in a way a stacked array cannot replace",
        "Only `outs.append(y)` once per step, then `jnp.stack(outs)` / `jnp.array(outs)` / `jnp.concatenate(outs)` / `len(outs)` / `outs[i]` after the loop are understood.",
        torch_fix="In a loop over time steps, only `outs.append(y)` once per step, then `torch.stack(outs)` / "
                  "`len(outs)` / `outs[i]` after the loop are understood; a loop over layers can collect the carried "
                  "tensor of each layer in a tuple (`acc = acc + (h,)`), not in a list."),
    Code("L2S502", "accumulator-init", "a list or tuple accumulator does not start empty just before the loop",
        "Start it as `[]` (or `()`) right before the loop and add the initial items after stacking."),
)


def find_accumulators(la, extend: bool = False) -> None:
    """The accumulators of the loop (``la.accs``), each with its uses after the
    loop; with ``extend``, also the tuples that grow by one item per step,
    possibly under an ``if`` (loops over torch layers)."""
    la.accs = OutputAnalysis(la).find(inputs.counter_name(la, la.iteration), extend=extend)


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S501", "returned-as-list", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return hs  # <-
        """, says=("`hs`", "after the loop")),
    Invalid("L2S501", "appended-twice", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                hs.append(h)
                h = jnp.tanh(h + x)
                hs.append(h)  # <-
            return jnp.stack(hs)
        """, says=("hs.append", "2 times")),
    Invalid("L2S501", "appended-conditionally", """
        def rnn(xs, h, keep_all):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                if keep_all:
                    hs.append(h)  # <-
            return h, jnp.stack(hs)
        """, says=("hs.append", "conditionally")),
    Invalid("L2S501", "read-inside-loop", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x + len(hs))  # <-
                hs.append(h)
            return jnp.stack(hs)
        """, says=("`hs`", "inside the loop")),
    Invalid("L2S501", "numpy-stack", """
        import numpy as np

        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return np.stack(hs)  # <-
        """, says=("np.stack(hs)",)),
    Invalid("L2S501", "tuple-grown-twice", """
        def rnn(xs, h):
            hs = ()
            for x in xs:
                hs += (h,)  # <-
                h = jnp.tanh(h + x)
                hs += (h,)  # <-
            return jnp.stack(hs)
        """, says=("`hs`", "2 times")),
    Invalid("L2S502", "list-not-empty", """
        def rnn(xs, h):
            hs = [h]  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs)
        """, says=("hs = []",)),
    Invalid("L2S502", "tuple-init-shared", """
        def rnn(xs, h0):
            h, hs = h0, []  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs)
        """, says=("`h`", "own")),
    Invalid("L2S502", "init-not-right-before", """
        def rnn(xs, h):
            hs = []
            hs_len = len(hs)  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs), hs_len
        """, says=("`hs`", "between")),
    Invalid("L2S501", "pytree-outputs-indexed-after-the-loop", """
        from typing import NamedTuple

        class State(NamedTuple):
            pos: jax.Array
            vel: jax.Array

        def simulate(xs, pos, vel):
            states = []
            for x in xs:
                vel = vel * 0.9 + jnp.tanh(x)
                pos = pos + vel
                states.append(State(pos, vel))
            return states[-1]  # <-
        """, says=("states[-1]", "pytree")),
)

VALID = (
    Valid("L2S501", "append-then-stack", """
        def rnn(xs, h):
            outs = []
            for x in xs:
                h = jnp.tanh(h + x)
                outs.append(h)
            return h, jnp.stack(outs)
        """, "rnn", ('f32[5,3,4], f32[3,4]', 'f32[1,3,4], f32[3,4]')),
    Valid("L2S502", "two-empty-accumulators-on-one-line", """
        def rnn(xs, h):
            hs, gs = [], []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
                gs.append(1.0 - h ** 2)
            return jnp.stack(hs), jnp.stack(gs, axis=1)
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S501", "pytree-outputs-stacked-leaf-by-leaf", """
        from typing import NamedTuple

        class State(NamedTuple):
            pos: jax.Array
            vel: jax.Array

        def simulate(xs, pos, vel):
            states = []
            for x in xs:
                vel = vel * 0.9 + jnp.tanh(x)
                pos = pos + vel
                states.append(State(pos, vel))
            return jax.tree.map(lambda *s: jnp.stack(s), *states)
        """, "simulate", ("f32[5,3], f32[3], f32[3]", "f32[1,3], f32[3], f32[3]")),
    Valid("L2S501", "tuple-outputs-stacked-on-axis-1", """
        def run(xs, h):
            outs = []
            for x in xs:
                h = jnp.tanh(h + x)
                outs.append((h, 2.0 * h))
            return jax.tree.map(lambda *s: jnp.stack(s, axis=1), *outs)
        """, "run", ("f32[5,3,4], f32[3,4]", "f32[1,3,4], f32[3,4]")),
    Valid("L2S501", "list-never-read-after-the-loop", """
        def run(xs, h):
            trace = []
            for x in xs:
                h = jnp.tanh(h + x)
                trace.append(h)
            return h
        """, "run", ("f32[5,3,4], f32[3,4]", "f32[1,3,4], f32[3,4]")),
)
