"""A Flax NNX GRU: a cell module called once per time step of a batch-major sequence.

The outputs are stacked on the time axis.

Demonstrates the `--framework flax` target on a time loop: the `nnx.scan`
carries the cell (`nnx.Carry`), so every step uses the same parameters and the
cell's dropout draws a new mask at every step, as in the loop.

    GRU(d_in, hidden, *, rngs)
    GRU.__call__(x [batch, time, d_in]) -> (outputs [batch, time, hidden], h [batch, hidden])
    example_inputs(module=None (this module), steps=12) -> {"self": GRU, "args": (x,)}
"""

import jax
import jax.numpy as jnp
from flax import nnx


class GRUCell(nnx.Module):
    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.gates = nnx.Linear(d_in + hidden, 2 * hidden, rngs=rngs)
        self.candidate = nnx.Linear(d_in + hidden, hidden, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, h, x):
        z, r = jnp.split(jax.nn.sigmoid(self.gates(jnp.concatenate([x, h], -1))), 2, axis=-1)
        c = jnp.tanh(self.candidate(jnp.concatenate([x, r * h], -1)))
        return (1 - z) * h + z * self.dropout(c)


class GRU(nnx.Module):
    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.cell = GRUCell(d_in, hidden, rngs=rngs)
        self.hidden = hidden

    @nnx.jit
    def __call__(self, x):
        h = jnp.zeros((x.shape[0], self.hidden))
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(h, x[:, t])
            outs.append(h)
        return jnp.stack(outs, axis=1), h


def example_inputs(module=None, steps=12, seed=0):
    gru = GRU if module is None else module.GRU
    model = gru(d_in=5, hidden=16, rngs=nnx.Rngs(seed))
    x = jax.random.normal(jax.random.key(seed + 1), (3, steps, 5))
    return {"self": model, "args": (x,)}


if __name__ == "__main__":
    ex = example_inputs()
    model, (x,) = ex["self"], ex["args"]
    outs, h = model(x)
    print("outputs:", outs.shape, "final state:", h.shape)
    print("last output is the final state:", bool(jnp.allclose(outs[:, -1], h)))
