"""A recurrent cell that is told which step it is at.

The step index is used as a number (sinusoidal features, a decaying step
size), not only to index the inputs.
"""

from functools import partial

import jax
import jax.numpy as jnp


def sinusoid(t, dim):
    """Sinusoidal embedding of a (possibly traced) integer step t: [dim]."""
    freqs = jnp.exp(-jnp.arange(dim // 2) / (dim // 2))
    angles = t * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


def _clocked_rnn_step(carry, xs_t):
    h, t, xs, w = carry
    # position features, broadcast over the batch
    pos = sinusoid(t, xs.shape[-1])
    h = jnp.tanh((xs_t + pos) @ w + h)
    return (h, t + 1, xs, w), None


def clocked_rnn(w, xs, h):
    """xs: [T, B, D], h: [B, D]; the cell sees sin/cos features of t."""
    (h, _, _, _), _ = jax.lax.scan(_clocked_rnn_step, (h, 0, xs, w), xs)
    return h


class AnnealedDescent:
    """Gradient descent on a quadratic with a 1/(t+1) step size."""

    def __init__(self, a):
        self.a = a

    def minimise(self, x0, n_steps):
        x = x0

        def _minimise_step(carry, _):
            x, step = carry
            lr = 0.5 / (step + 1)
            grad = self.a @ x
            x = x - lr * grad
            return (x, step + 1), jnp.sum(x * (self.a @ x))

        (x, _), trace = jax.lax.scan(_minimise_step, (x, 0), length=max(n_steps, 0))
        return x, trace


@partial(jax.jit, static_argnames="n_steps")
def anneal(a, x0, n_steps):
    return AnnealedDescent(a).minimise(x0, n_steps)


def example_inputs():
    T, B, D = 5, 3, 4
    kw, kx, kh, ka = jax.random.split(jax.random.PRNGKey(6), 4)
    w = jax.random.normal(kw, (D, D)) / 2.0
    xs = jax.random.normal(kx, (T, B, D))
    h = jax.random.normal(kh, (B, D))
    m = jax.random.normal(ka, (D, D))
    a = m @ m.T / D + jnp.eye(D)
    x0 = jax.random.normal(kh, (D,))
    return {
        "clocked_rnn": [(w, xs, h), (w, xs[:1], h), (w, xs[:0], h)],
        "anneal": [(a, x0, 7), (a, x0, 1)],
    }
