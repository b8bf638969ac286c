"""A GRU whose cell is a module-level function, applied step by step.

The encoder and the decoder each have their own weights dict; the decoder is
fed its own previous output (teacher forcing off).
"""

import jax
import jax.numpy as jnp


def dense_init(key, d_in, d_out):
    return jax.random.normal(key, (d_in, d_out)) / jnp.sqrt(d_in)


def init_gru(key, d_in, hidden):
    """Weights for the update (z), reset (r) and candidate (n) gates."""
    keys = jax.random.split(key, 6)
    return {
        "wz": dense_init(keys[0], d_in, hidden), "uz": dense_init(keys[1], hidden, hidden),
        "wr": dense_init(keys[2], d_in, hidden), "ur": dense_init(keys[3], hidden, hidden),
        "wn": dense_init(keys[4], d_in, hidden), "un": dense_init(keys[5], hidden, hidden),
    }


def gru_cell(p, h, x):
    """One GRU step: returns the new hidden state."""
    z = jax.nn.sigmoid(x @ p["wz"] + h @ p["uz"])
    r = jax.nn.sigmoid(x @ p["wr"] + h @ p["ur"])
    n = jnp.tanh(x @ p["wn"] + (r * h) @ p["un"])
    return (1.0 - z) * n + z * h


def encode_decode(enc, dec, xs, h0):
    """xs: [T, B, D] -> (decoder outputs [T, B, H], final encoder state [B, H])."""
    # --- encoder: read the whole sequence
    h = h0
    for t in range(xs.shape[0]):
        h = gru_cell(enc, h, xs[t])
    context = h

    # --- decoder: start from the context, feed back the previous state
    y = context
    outputs = []
    for t in range(xs.shape[0]):
        # the decoder input is its own previous output (projected by the cell)
        y = gru_cell(dec, y, jnp.tanh(y))
        outputs.append(y)
    return jnp.stack(outputs), context


class GRUEncoder:
    def __init__(self, params):
        self.params = params

    def __call__(self, xs, h0):
        """Return the final state; an empty sequence returns h0."""
        h = h0
        for t in range(xs.shape[0]):
            h = gru_cell(self.params, h, xs[t])  # same cell, method form
        return h


@jax.jit
def encode(params, xs, h0):
    return GRUEncoder(params)(xs, h0)


def example_inputs():
    T, B, D, H = 6, 2, 5, 4
    ke, kd, kx, kh = jax.random.split(jax.random.PRNGKey(1), 4)
    enc = init_gru(ke, D, H)
    dec = init_gru(kd, H, H)
    xs = jax.random.normal(kx, (T, B, D))
    h0 = jax.random.normal(kh, (B, H))
    return {
        "encode_decode": [(enc, dec, xs, h0), (enc, dec, xs[:1], h0)],
        "encode": [(enc, xs, h0), (enc, xs[:1], h0), (enc, xs[:0], h0)],
    }
