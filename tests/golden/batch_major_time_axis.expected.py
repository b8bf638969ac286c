"""Batch-major sequences: time is axis 1, so the loop reads ``x[:, t]``.

    attention_free_rnn(params, x) -> states [B, T, H]
"""

import jax
import jax.numpy as jnp


def layer_norm(h, eps=1e-5):
    mu = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.var(h, axis=-1, keepdims=True)
    return (h - mu) / jnp.sqrt(var + eps)


def _attention_free_rnn_step(carry, x_t):
    h, params = carry
    # x[:, t] is the [B, D] slice of time step t
    h = layer_norm(jnp.tanh(x_t @ params["w"] + h @ params["u"]))
    return (h, params), h


def attention_free_rnn(params, x):
    """x: [B, T, D] -> states [B, T, H] (batch-major in and out)."""
    B, T, _ = x.shape
    h = jnp.zeros((B, params["u"].shape[0]))
    (h, _), states = jax.lax.scan(
        _attention_free_rnn_step,
        (h, params),
        jnp.moveaxis(x, 1, 0),
    )
    # put time back on axis 1
    return jnp.moveaxis(states, 0, 1)


def _pool_step(carry, x_t):
    acc, x = carry
    acc = acc + x_t / x.shape[1]
    return (acc, x), None


class MeanPoolOverTime:
    """Streaming mean over the time axis of a batch-major input."""

    def pool(self, x):
        acc = jnp.zeros((x.shape[0], x.shape[2]))
        (acc, _), _ = jax.lax.scan(_pool_step, (acc, x), jnp.moveaxis(x, 1, 0))
        return acc


def mean_pool(x):
    return MeanPoolOverTime().pool(x)


def example_inputs():
    B, T, D, H = 2, 5, 3, 4
    kw, ku, kx = jax.random.split(jax.random.PRNGKey(8), 3)
    params = {"w": jax.random.normal(kw, (D, H)), "u": 0.5 * jax.random.normal(ku, (H, H))}
    x = jax.random.normal(kx, (B, T, D))
    return {
        "attention_free_rnn": [(params, x), (params, x[:, :1])],
        "mean_pool": [(x,), (x[:, :1],), (x[:, :0],)],
    }
