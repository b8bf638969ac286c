"""Collecting hidden states in a tuple, as Hugging Face style code does.

    encoder(params, xs) -> (last state, all states stacked on the last axis)
"""

import jax
import jax.numpy as jnp


def highway(p, h, x):
    """Highway cell: a gated mix of the transform and the carried state."""
    gate = jax.nn.sigmoid(x @ p["wg"] + h @ p["ug"])
    cand = jnp.tanh(x @ p["wc"] + h @ p["uc"])
    return gate * cand + (1.0 - gate) * h


def _encoder_step(carry, x):
    h, params = carry
    h = highway(params, h, x)
    # like output_hidden_states=True
    return (h, params), h


def encoder(params, xs):
    """xs: [T, B, D] -> (h [B, H], all_hidden [B, H, T], n_states)."""
    h = jnp.zeros((xs.shape[1], params["ug"].shape[0]))
    (h, _), all_hidden = jax.lax.scan(_encoder_step, (h, params), xs)
    return h, jnp.moveaxis(all_hidden, 0, -1), len(all_hidden)


class Summariser:
    def __init__(self, params):
        self.params = params

    def first_and_last(self, xs):
        """States after the first and after the last step."""
        h = jnp.zeros((xs.shape[1], self.params["ug"].shape[0]))

        def _first_and_last_step(h, x):
            h = highway(self.params, h, x)
            return h, h

        h, states = jax.lax.scan(_first_and_last_step, h, xs)
        return states[0], states[-1]


@jax.jit
def first_and_last(params, xs):
    return Summariser(params).first_and_last(xs)


def example_inputs():
    T, B, D, H = 5, 2, 3, 4
    ks = jax.random.split(jax.random.PRNGKey(10), 5)
    params = {
        "wg": jax.random.normal(ks[0], (D, H)), "ug": jax.random.normal(ks[1], (H, H)) / 2,
        "wc": jax.random.normal(ks[2], (D, H)), "uc": jax.random.normal(ks[3], (H, H)) / 2,
    }
    xs = jax.random.normal(ks[4], (T, B, D))
    return {
        "encoder": [(params, xs), (params, xs[:1])],
        "first_and_last": [(params, xs), (params, xs[:1])],
    }
