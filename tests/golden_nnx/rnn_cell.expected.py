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

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def _gru_step(carry, x_t):
            cell, h = carry
            h = cell(h, x_t)
            return (cell, h), h

        (_, h), outs = _gru_step((self.cell, h), jnp.moveaxis(x, 1, 0))
        return jnp.moveaxis(outs, 0, 1), h


class Bidirectional(nnx.Module):
    """Two cells; the backward one runs over reversed time."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.forward_cell = GRUCell(d_in, hidden, rngs=rngs)
        self.backward_cell = GRUCell(d_in, hidden, rngs=rngs)

    @nnx.jit
    def __call__(self, xs: jax.Array, h):
        """xs: [time, batch, features] (time-major)."""
        hf, hb = h, h

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def _bidirectional_step(carry, x):
            forward_cell, hf = carry
            hf = forward_cell(hf, x)
            return forward_cell, hf

        _, hf = _bidirectional_step((self.forward_cell, hf), xs)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, reverse=True)
        def _bidirectional_reverse_step(carry, x):
            backward_cell, hb = carry
            hb = backward_cell(hb, x)
            return backward_cell, hb

        _, hb = _bidirectional_reverse_step((self.backward_cell, hb), xs)
        return hf + hb


@nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
def _eager_step(carry, x_t):
    cell, h = carry
    h = cell(h, x_t)
    return cell, h


class Eager(nnx.Module):
    """No transformation in sight: the step is defined once, at module level."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.cell = GRUCell(d_in, hidden, rngs=rngs)

    def __call__(self, x: jax.Array, h: jax.Array):
        _, h = _eager_step((self.cell, h), x)
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
