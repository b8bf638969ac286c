"""Elman RNN unrolled over time with a plain Python ``for`` loop.

Demonstrates a loop over ``range(xs.shape[0])`` that indexes the time axis,
carries one hidden state and collects every step's state in a list that is
stacked at the end.

    rnn(params, xs, h0) -> (h_final [B, H], hs [T, B, H])
    example_inputs(seed=0, steps=7, batch=3, d_in=5, hidden=4) -> (params, xs, h0)
"""

import jax
import jax.numpy as jnp


def init_params(key, d_in, hidden):
    kx, kh, kb = jax.random.split(key, 3)
    return {
        "wx": jax.random.normal(kx, (d_in, hidden)) / jnp.sqrt(d_in),
        "wh": jax.random.normal(kh, (hidden, hidden)) / jnp.sqrt(hidden),
        "b": 0.1 * jax.random.normal(kb, (hidden,)),
    }


def rnn(params, xs, h0):
    """xs: [T, B, D_in], h0: [B, H] -> (final h [B, H], all hidden states [T, B, H])"""
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)


def loss(params, xs, h0):
    h, hs = rnn(params, xs, h0)
    return jnp.mean(hs**2) + jnp.mean(h**2)


def example_inputs(seed=0, steps=7, batch=3, d_in=5, hidden=4):
    kp, kx, kh = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = init_params(kp, d_in, hidden)
    xs = jax.random.normal(kx, (steps, batch, d_in))
    h0 = jax.random.normal(kh, (batch, hidden))
    return params, xs, h0


if __name__ == "__main__":
    args = example_inputs()
    h, hs = jax.jit(rnn)(*args)
    grads = jax.grad(loss)(*args)
    print("h:", h.shape, "hs:", hs.shape)
    print("grads:", {k: v.shape for k, v in grads.items()})
