"""The parameter-list MLP written by hand with stacked parameters and ``jax.lax.scan``."""

import jax
import jax.numpy as jnp


def init_mlp(key, n_layers, width):
    """The same values as the looped version, stacked: w [L, width, width], b [L, width]."""

    def init_layer(k):
        kw, kb = jax.random.split(k)
        return jax.random.normal(kw, (width, width)) / jnp.sqrt(width), 0.1 * jax.random.normal(kb, (width,))

    layers = [init_layer(k) for k in jax.random.split(key, n_layers)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)


def mlp(params, x):
    def layer(x, wb):
        w, b = wb
        return jnp.tanh(x @ w + b), None

    x, _ = jax.lax.scan(layer, x, params)
    return x


def loss(params, x):
    return jnp.mean(mlp(params, x) ** 2)
