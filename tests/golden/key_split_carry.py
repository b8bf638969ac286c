"""Stochastic recurrences that split a PRNG key at every step.

The key is part of the carried state, so each step draws fresh noise.
"""

import jax
import jax.numpy as jnp


def noisy_rnn(key, w, xs, h, noise_scale):
    """xs: [T, B, D]; returns (states [T, B, D], final key)."""
    states = []
    for x in xs:
        # fresh noise for this step only
        key, sub = jax.random.split(key)
        noise = noise_scale * jax.random.normal(sub, h.shape)
        h = jnp.tanh(x @ w + h) + noise
        states.append(h)
    return jnp.stack(states), key


class DropoutRNN:
    """Applies an independent dropout mask at every step."""

    def __init__(self, w, rate):
        self.w = w
        self.rate = rate

    def __call__(self, key, xs, h):
        for t in range(xs.shape[0]):
            key, mask_key = jax.random.split(key)
            keep = jax.random.bernoulli(mask_key, 1.0 - self.rate, h.shape)
            h = jnp.where(keep, jnp.tanh(xs[t] @ self.w + h) / (1.0 - self.rate), 0.0)
        return h


@jax.jit
def dropout_rnn(key, w, xs, h):
    return DropoutRNN(w, 0.25)(key, xs, h)


def example_inputs():
    T, B, D = 6, 2, 3
    key = jax.random.PRNGKey(12)
    kw, kx, kh = jax.random.split(jax.random.PRNGKey(13), 3)
    w = jax.random.normal(kw, (D, D)) / 2
    xs = jax.random.normal(kx, (T, B, D))
    h = jax.random.normal(kh, (B, D))
    scale = jnp.float32(0.1)
    return {
        "noisy_rnn": [(key, w, xs, h, scale), (key, w, xs[:1], h, scale)],
        "dropout_rnn": [(key, w, xs, h), (key, w, xs[:1], h), (key, w, xs[:0], h)],
    }
