"""Elman RNN written with ``jax.lax.scan`` over the time axis.

Reference scan formulation of ``examples/jax_rnn.py``: same signature,
return structure and dtypes.

    rnn(params, xs, h0) -> (h_final [B, H], hs [T, B, H])
"""

import jax
import jax.numpy as jnp


def rnn(params, xs, h0):
    """xs: [T, B, D_in], h0: [B, H] -> (final h [B, H], all hidden states [T, B, H])"""
    wx, wh, b = params["wx"], params["wh"], params["b"]

    def step(h, x):
        h = jnp.tanh(x @ wx + h @ wh + b)
        return h, h

    return jax.lax.scan(step, h0, xs)


def loss(params, xs, h0):
    h, hs = rnn(params, xs, h0)
    return jnp.mean(hs**2) + jnp.mean(h**2)
