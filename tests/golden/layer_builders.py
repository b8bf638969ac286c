"""Per-layer parameter lists built once and scanned: the builders return the
stacked layout.  A list of one call per PRNG key becomes that call mapped over
the keys with ``jax.vmap``; any other list is stacked leaf by leaf."""

import jax
import jax.numpy as jnp


def init_block(key, d_in, d_out):
    """One residual block: weights drawn from the key, a gain of ones."""
    kw, kb = jax.random.split(key)
    w = jax.random.normal(kw, (d_in, d_out)) / jnp.sqrt(d_in)
    return {"w": w, "b": 0.1 * jax.random.normal(kb, (d_out,)), "gain": jnp.ones(d_out)}


def init_blocks(key, n_layers, width):
    keys = jax.random.split(key, n_layers)
    return [init_block(k, width, width) for k in keys]


@jax.jit
def residual_stack(blocks, x):
    for block in blocks:
        x = x + block["gain"] * jnp.tanh(x @ block["w"] + block["b"])
    return x


def init_gated_residual_layer_parameters_with_scales(key, number_of_layers, width):
    """Built by an append loop, with a Python number per layer: stacked leaf by leaf."""
    gated_residual_layer_parameters = []
    for layer_key in jax.random.split(key, number_of_layers):
        kw, kg = jax.random.split(layer_key)
        gated_residual_layer_parameters.append(
            (jax.random.normal(kw, (width, width)) / width, jax.random.normal(kg, (width,)), 0.5)
        )
    return gated_residual_layer_parameters


@jax.jit
def gated_stack(layers, x):
    for w, g, scale in layers:
        x = x + scale * jax.nn.sigmoid(g) * jnp.tanh(x @ w)
    return x


def run_residual(key, x):
    blocks = init_blocks(key, 5, x.shape[-1])
    return residual_stack(blocks, x)


def run_gated(key, x):
    layers = init_gated_residual_layer_parameters_with_scales(key, 3, x.shape[-1])
    return gated_stack(layers, x)


def example_inputs():
    x = jax.random.normal(jax.random.PRNGKey(51), (3, 4))
    key = jax.random.PRNGKey(52)
    return {"run_residual": [(key, x)], "run_gated": [(key, x)]}
