"""A multi-layer perceptron whose parameters are a Python list of per-layer pairs.

Demonstrates a loop over a list of per-layer parameters, ``for w, b in params``.
loop2scan makes ``init_mlp`` return the parameters stacked once (one ``w`` of
shape [L, width, width] and one ``b`` of shape [L, width]) and turns every loop
over them into a ``jax.lax.scan``; ``len(params)`` below is adapted too.

    init_mlp(key, n_layers, width) -> params (list of (w [width, width], b [width]))
    mlp(params, x) -> [batch, width]
    loss(params, x) -> scalar
    example_inputs(seed=0, n_layers=5, width=4, batch=3) -> (params, x)
"""

import jax
import jax.numpy as jnp


def init_mlp(key, n_layers, width):
    params = []
    for k in jax.random.split(key, n_layers):
        kw, kb = jax.random.split(k)
        w = jax.random.normal(kw, (width, width)) / jnp.sqrt(width)
        b = 0.1 * jax.random.normal(kb, (width,))
        params.append((w, b))
    return params


def mlp(params, x):
    """x: [batch, width] -> [batch, width]"""
    for w, b in params:
        x = jnp.tanh(x @ w + b)
    return x


def loss(params, x):
    return jnp.mean(mlp(params, x) ** 2)


def example_inputs(seed=0, n_layers=5, width=4, batch=3):
    kp, kx = jax.random.split(jax.random.PRNGKey(seed))
    return init_mlp(kp, n_layers, width), jax.random.normal(kx, (batch, width))


if __name__ == "__main__":
    params, x = example_inputs()
    print("layers:", len(params))
    print("mlp:", jax.jit(mlp)(params, x).shape)
    print("loss:", loss(params, x))
    grads = jax.grad(loss)(params, x)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    print("loss after one gradient step:", loss(params, x))
