"""A module with several loops, only one of which becomes a scan.

- ``layer_sizes`` computes Python ints: it must stay a loop;
- ``fixed_point`` stops early with ``break``: declined;
- ``smooth`` is a plain recurrence: rewritten, reusing the ``lax`` import.
"""

import jax.numpy as jnp
from jax import lax


def layer_sizes(d_in, n_layers):
    """Widths of a pyramid MLP, as Python ints (shapes must stay static)."""
    sizes = [d_in]
    for _ in range(n_layers):
        sizes.append(sizes[-1] * 2)
    return sizes


def fixed_point(f_w, x0, max_iters):
    """Iterate x <- tanh(W x) until two iterates agree (host-side check)."""
    x = x0
    for _ in range(max_iters):
        x_new = jnp.tanh(f_w @ x)
        if jnp.max(jnp.abs(x_new - x)) < 1e-6:
            break
        x = x_new
    return x


def _smooth_step(carry, frame):
    level, alpha = carry
    # clip outliers before they enter the average
    level = alpha * jnp.clip(frame, -3.0, 3.0) + (1 - alpha) * level
    return (level, alpha), level


def smooth(signal, alpha):
    """Exponential smoothing of a [T, C] signal; returns every smoothed frame."""
    # start from the first frame, treated as a constant
    level = lax.stop_gradient(signal[0])
    (level, _), smoothed = lax.scan(_smooth_step, (level, alpha), jnp.asarray(signal))
    return smoothed


class Cumulative:
    """Already written with lax.scan by hand: left alone."""

    def cumsum(self, xs):
        def body(acc, x):
            acc = acc + x
            return acc, acc
        _, out = lax.scan(body, jnp.zeros(xs.shape[1:]), xs)
        return out


def cumulative(xs):
    return Cumulative().cumsum(xs)


def scaled_sizes(d_in, scale):
    return scale * jnp.asarray(layer_sizes(d_in, 3), jnp.float32)


def example_inputs():
    from jax import random

    T, C, D = 6, 3, 4
    ks, kw, kx = random.split(random.PRNGKey(14), 3)
    signal = random.normal(ks, (T, C))
    f_w = random.normal(kw, (D, D)) / 4
    x0 = random.normal(kx, (D,))
    return {
        "smooth": [(signal, jnp.float32(0.3)), (signal[:1], jnp.float32(0.3))],
        "cumulative": [(signal,), (signal[:0],)],
        "scaled_sizes": [(5, jnp.float32(0.5))],
    }
