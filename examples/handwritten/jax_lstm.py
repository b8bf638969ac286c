"""LSTM written with ``jax.lax.scan`` over the time axis.

Reference scan formulation of ``examples/jax_lstm.py``: same signature,
return structure and dtypes. The scan stacks outputs time-major; one
``swapaxes`` gives the batch-major result.

    lstm(params, xs, h0, c0) -> (outs [B, T, H], (h [B, H], c [B, H]))
"""

import jax
import jax.numpy as jnp


def lstm(params, xs, h0, c0):
    """xs: [T, B, D_in], h0, c0: [B, H] -> (outputs [B, T, H], (h [B, H], c [B, H]))"""
    wx, wh, b = params["wx"], params["wh"], params["b"]

    def step(carry, x):
        h, c = carry
        z = x @ wx + h @ wh + b
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    (h, c), outs = jax.lax.scan(step, (h0, c0), xs)
    return jnp.swapaxes(outs, 0, 1), (h, c)


def loss(params, xs, h0, c0):
    outs, (h, c) = lstm(params, xs, h0, c0)
    return jnp.mean(outs**2) + jnp.mean(h**2) + jnp.mean(c**2)
