"""LSTM over time with a plain Python ``for x in xs:`` loop.

Demonstrates a loop that iterates directly over the leading (time) axis of
an array, carries two states ``(h, c)`` and returns a batch-major stack of
the per-step outputs.

    lstm(params, xs, h0, c0) -> (outs [B, T, H], (h [B, H], c [B, H]))
    example_inputs(seed=0, steps=6, batch=3, d_in=5, hidden=4) -> (params, xs, h0, c0)
"""

import jax
import jax.numpy as jnp


def init_params(key, d_in, hidden):
    kx, kh, kb = jax.random.split(key, 3)
    return {
        "wx": jax.random.normal(kx, (d_in, 4 * hidden)) / jnp.sqrt(d_in),
        "wh": jax.random.normal(kh, (hidden, 4 * hidden)) / jnp.sqrt(hidden),
        "b": 0.1 * jax.random.normal(kb, (4 * hidden,)),
    }


def lstm(params, xs, h0, c0):
    """xs: [T, B, D_in], h0, c0: [B, H] -> (outputs [B, T, H], (h [B, H], c [B, H]))"""
    h, c = h0, c0
    outs = []
    for x in xs:
        z = x @ params["wx"] + h @ params["wh"] + params["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        outs.append(h)
    return jnp.stack(outs, axis=1), (h, c)


def loss(params, xs, h0, c0):
    outs, (h, c) = lstm(params, xs, h0, c0)
    return jnp.mean(outs**2) + jnp.mean(h**2) + jnp.mean(c**2)


def example_inputs(seed=0, steps=6, batch=3, d_in=5, hidden=4):
    kp, kx, kh, kc = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = init_params(kp, d_in, hidden)
    xs = jax.random.normal(kx, (steps, batch, d_in))
    h0 = jax.random.normal(kh, (batch, hidden))
    c0 = jax.random.normal(kc, (batch, hidden))
    return params, xs, h0, c0


if __name__ == "__main__":
    args = example_inputs()
    outs, (h, c) = jax.jit(lstm)(*args)
    grads = jax.grad(loss)(*args)
    print("outs:", outs.shape, "h:", h.shape, "c:", c.shape)
    print("grads:", {k: v.shape for k, v in grads.items()})
