"""A module that imports ``jax`` and ``lax`` but not ``jax.numpy``: the import
the rewrite needs goes next to the other ``jax`` imports."""

import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

SCALE = math.sqrt(2.0)


def _smooth_step(carry, x):
    h, alpha = carry
    h = alpha * h + (1 - alpha) * jax.nn.relu(x * SCALE)
    return (h, alpha), None


def smooth(xs, h, alpha):
    """xs may be a list of arrays: it is stacked before the scan."""
    (h, _), _ = lax.scan(_smooth_step, (h, alpha), jnp.asarray(xs))
    return h


def example_inputs():
    xs = jax.random.normal(jax.random.PRNGKey(41), (5, 3))
    h = np.zeros(3, np.float32)
    return {"smooth": [(xs, h, 0.5), (xs[:1], h, 0.5), (xs[:0], h, 0.5)]}
