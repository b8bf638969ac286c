"""The NNX GRU written by hand with ``nnx.scan`` over time, the cell carried."""

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
        @nnx.scan(in_axes=(nnx.Carry, 1), out_axes=(nnx.Carry, 1))
        def step(carry, x_t):
            cell, h = carry
            h = cell(h, x_t)
            return (cell, h), h

        (_, h), outs = step((self.cell, jnp.zeros((x.shape[0], self.hidden))), x)
        return outs, h


def example_inputs(module=None, steps=12, seed=0):
    gru = GRU if module is None else module.GRU
    model = gru(d_in=5, hidden=16, rngs=nnx.Rngs(seed))
    x = jax.random.normal(jax.random.key(seed + 1), (3, steps, 5))
    return {"self": model, "args": (x,)}
