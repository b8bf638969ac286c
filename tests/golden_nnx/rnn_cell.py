"""NNX recurrent models: a cell module called once per time step."""

import jax
import jax.numpy as jnp
from flax import nnx


class GRUCell(nnx.Module):
    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.gates = nnx.Linear(d_in + hidden, 2 * hidden, rngs=rngs)
        self.candidate = nnx.Linear(d_in + hidden, hidden, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)

    def __call__(self, h, x):
        z, r = jnp.split(jax.nn.sigmoid(self.gates(jnp.concatenate([x, h], -1))), 2, axis=-1)
        c = jnp.tanh(self.candidate(jnp.concatenate([x, r * h], -1)))
        return (1 - z) * h + z * self.drop(c)


class GRU(nnx.Module):
    """Batch-major inputs; the outputs are stacked on the time axis."""

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


class Bidirectional(nnx.Module):
    """Two cells; the backward one runs over reversed time."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.forward_cell = GRUCell(d_in, hidden, rngs=rngs)
        self.backward_cell = GRUCell(d_in, hidden, rngs=rngs)

    @nnx.jit
    def __call__(self, xs: jax.Array, h):
        """xs: [time, batch, features] (time-major)."""
        hf, hb = h, h
        for x in xs:
            hf = self.forward_cell(hf, x)
        for x in reversed(xs):
            hb = self.backward_cell(hb, x)
        return hf + hb


class Eager(nnx.Module):
    """No transformation in sight: the step is defined once, at module level."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.cell = GRUCell(d_in, hidden, rngs=rngs)

    def __call__(self, x: jax.Array, h: jax.Array):
        for t in range(x.shape[0]):
            h = self.cell(h, x[t])
        return h


def example_inputs():
    """(class, constructor arguments, call arguments, call keyword arguments)."""
    b, t, d, hidden = 3, 5, 4, 6
    x = jax.random.normal(jax.random.key(1), (b, t, d))
    xs = jax.random.normal(jax.random.key(2), (t, b, d))
    h = jax.random.normal(jax.random.key(3), (b, hidden))
    one = jax.random.normal(jax.random.key(4), (b, 1, d))
    return [
        ("GRU", {"d_in": d, "hidden": hidden}, (x,), {}),
        ("GRU", {"d_in": d, "hidden": hidden}, (one,), {}),
        ("Bidirectional", {"d_in": d, "hidden": hidden}, (xs, h), {}),
        ("Bidirectional", {"d_in": d, "hidden": hidden}, (xs[:1], h), {}),
        ("Eager", {"d_in": d, "hidden": hidden}, (xs, h), {}),
    ]
