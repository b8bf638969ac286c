"""Elman RNN unrolled over time with a Python loop over the time index.

    rnn_forward(params, xs, h0) -> (h_T [B, H], hs [T, B, H])
    final_logits(params, readout, xs, h0) -> logits [B, C]
"""

import jax
import jax.numpy as jnp


def init_params(key, d_in, hidden):
    """Scaled normal input and recurrent weights, zero bias."""
    kx, kh = jax.random.split(key)
    return {
        "wx": jax.random.normal(kx, (d_in, hidden)) / jnp.sqrt(d_in),
        "wh": jax.random.normal(kh, (hidden, hidden)) / jnp.sqrt(hidden),
        "b": jnp.zeros((hidden,)),
    }


def _rnn_forward_step(carry, xs_t):
    h, params = carry
    # Elman update: the new state mixes the input and the previous state
    pre = xs_t @ params["wx"] + h @ params["wh"] + params["b"]
    h = jnp.tanh(pre)
    return (h, params), h  # keep every hidden state


def rnn_forward(params, xs, h0):
    """xs: [T, B, D], h0: [B, H]."""
    h = h0
    # one step per time index; xs[t] is the [B, D] slice at time t
    (h, _), hs = jax.lax.scan(_rnn_forward_step, (h, params), xs)

    # stack along time: [T, B, H]
    return h, hs


class ElmanClassifier:
    """Runs the RNN and classifies the sequence from its last state."""

    def __init__(self, params, readout):
        self.params = params
        self.readout = readout

    def logits(self, xs, h0):
        """Only the final state is needed, so nothing is collected."""
        h = h0

        def _logits_step(h, xs_t):
            h = jnp.tanh(xs_t @ self.params["wx"] + h @ self.params["wh"] + self.params["b"])
            return h, None

        h, _ = jax.lax.scan(_logits_step, h, xs)
        return h @ self.readout


@jax.jit
def final_logits(params, readout, xs, h0):
    return ElmanClassifier(params, readout).logits(xs, h0)


def example_inputs():
    T, B, D, H, C = 7, 3, 5, 4, 2
    kp, kr, kx, kh = jax.random.split(jax.random.PRNGKey(0), 4)
    params = init_params(kp, D, H)
    readout = jax.random.normal(kr, (H, C))
    xs = jax.random.normal(kx, (T, B, D))
    h0 = jax.random.normal(kh, (B, H))
    return {
        "rnn_forward": [(params, xs, h0), (params, xs[:1], h0)],
        "final_logits": [(params, readout, xs, h0), (params, readout, xs[:1], h0), (params, readout, xs[:0], h0)],
    }
