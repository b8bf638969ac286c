"""Time on the last axis (``x[..., t]``), outputs placed by an ``enumerate``
counter, and ranges that run no step on short sequences.
"""

import jax
import jax.numpy as jnp


def _smooth_last_axis_step(carry, x_t):
    s, alpha = carry
    s = alpha * x_t + (1.0 - alpha) * s
    return (s, alpha), s  # channels-last buffer


def smooth_last_axis(x, alpha):
    """Exponential smoothing along the last (time) axis of a [..., T] signal."""
    s = x[..., 0]
    out = jnp.zeros(x.shape)
    (s, _), out_steps = jax.lax.scan(
        _smooth_last_axis_step,
        (s, alpha),
        jnp.moveaxis(x, -1, 0),
    )
    out = out.at[..., : x.shape[-1]].set(jnp.moveaxis(out_steps, 0, -1))
    return out


def _write_rows_step(carry, frame):
    h, w = carry
    h = jnp.tanh(frame @ w + h)
    return (h, w), h


def write_rows(frames, w):
    """One output row per frame, written one slot below the frame's number."""
    h = jnp.zeros(w.shape[1])
    rows = jnp.zeros((len(frames) + 1, w.shape[1]))
    (h, _), rows_steps = jax.lax.scan(_write_rows_step, (h, w), jnp.asarray(frames))
    rows = rows.at[1 : len(frames) + 1].set(rows_steps)
    return rows, h


def _trailing_context_step(carry, inputs):
    acc, k = carry
    x_t, x_t_p3 = inputs
    acc = acc * k + x_t * x_t_p3
    return (acc, k), None


def trailing_context(x, k):
    """Mixes each step with the step three later; runs no step for T <= 3."""
    acc = jnp.zeros(x.shape[1:])
    (acc, _), _ = jax.lax.scan(
        _trailing_context_step,
        (acc, k),
        (x[: max(x.shape[0] - 3, 0)], x[3:]),
    )
    return acc


def example_inputs():
    T, B, D, H = 6, 3, 4, 5
    kx, kw = jax.random.split(jax.random.PRNGKey(11))
    x = jax.random.normal(kx, (B, D, T))
    frames = jax.random.normal(kx, (T, D))
    w = jax.random.normal(kw, (D, H)) * 0.5
    seq = jax.random.normal(kx, (T, B))
    alpha, k = jnp.float32(0.3), jnp.float32(0.9)
    return {
        "smooth_last_axis": [(x, alpha), (x[..., :1], alpha)],
        "write_rows": [(frames, w), (frames[:1], w), (frames[:0], w)],
        "trailing_context": [(seq, k), (seq[:4], k), (seq[:3], k), (seq[:1], k), (seq[:0], k)],
    }
