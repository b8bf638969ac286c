"""Bidirectional RNN: one pass forward in time, one pass backward.

Both directions are plain loops in the same function; the backward pass uses
``reversed(range(T))`` and collects its states in processing order.
"""

import jax
import jax.numpy as jnp


def rnn_step(w, u, h, x):
    """Shared cell of both directions."""
    return jnp.tanh(x @ w + h @ u)


def _birnn_step(carry, xs_t):
    h, fwd = carry
    h = rnn_step(fwd["w"], fwd["u"], h, xs_t)
    return (h, fwd), h


def _birnn_reverse_step(carry, xs_t):
    g, bwd = carry
    g = rnn_step(bwd["w"], bwd["u"], g, xs_t)
    return (g, bwd), g


def birnn(fwd, bwd, xs):
    """xs: [T, B, D] -> features [T, B, 2H]."""
    T, B = xs.shape[0], xs.shape[1]
    H = fwd["u"].shape[0]

    # forward direction: t = 0 .. T-1
    h = jnp.zeros((B, H))
    (h, _), forward_states = jax.lax.scan(_birnn_step, (h, fwd), xs)

    # backward direction: t = T-1 .. 0
    g = jnp.zeros((B, H))
    (g, _), backward_states = jax.lax.scan(
        _birnn_reverse_step,
        (g, bwd),
        xs,
        reverse=True,
    )

    # features of both directions, aligned in time
    return jnp.concatenate([forward_states, backward_states], axis=-1)


class BackwardSummary:
    """Summarises a sequence by reading it backwards."""

    def __init__(self, params):
        self.params = params

    def summary(self, xs):
        g = jnp.zeros((xs.shape[1], self.params["u"].shape[0]))

        def _summary_step(g, xs_t):
            g = rnn_step(self.params["w"], self.params["u"], g, xs_t)
            return g, None

        g, _ = jax.lax.scan(_summary_step, g, xs, reverse=True)
        return g


@jax.jit
def backward_summary(params, xs):
    return BackwardSummary(params).summary(xs)


def example_inputs():
    T, B, D, H = 6, 2, 5, 3
    k1, k2, k3, k4, kx = jax.random.split(jax.random.PRNGKey(3), 5)
    fwd = {"w": jax.random.normal(k1, (D, H)), "u": 0.5 * jax.random.normal(k2, (H, H))}
    bwd = {"w": jax.random.normal(k3, (D, H)), "u": 0.5 * jax.random.normal(k4, (H, H))}
    xs = jax.random.normal(kx, (T, B, D))
    return {
        "birnn": [(fwd, bwd, xs), (fwd, bwd, xs[:1])],
        "backward_summary": [(bwd, xs), (bwd, xs[:1]), (bwd, xs[:0])],
    }
