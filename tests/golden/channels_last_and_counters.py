"""Time on the last axis (``x[..., t]``), outputs placed by an ``enumerate``
counter, and ranges that run no step on short sequences.
"""

import jax
import jax.numpy as jnp


def smooth_last_axis(x, alpha):
    """Exponential smoothing along the last (time) axis of a [..., T] signal."""
    s = x[..., 0]
    out = jnp.zeros(x.shape)
    for t in range(x.shape[-1]):
        s = alpha * x[..., t] + (1.0 - alpha) * s
        out = out.at[..., t].set(s)  # channels-last buffer
    return out


def write_rows(frames, w):
    """One output row per frame, written one slot below the frame's number."""
    h = jnp.zeros(w.shape[1])
    rows = jnp.zeros((len(frames) + 1, w.shape[1]))
    for i, frame in enumerate(frames, 1):
        h = jnp.tanh(frame @ w + h)
        rows = rows.at[i].set(h)
    return rows, h


def trailing_context(x, k):
    """Mixes each step with the step three later; runs no step for T <= 3."""
    acc = jnp.zeros(x.shape[1:])
    for t in range(x.shape[0] - 3):
        acc = acc * k + x[t] * x[t + 3]
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
