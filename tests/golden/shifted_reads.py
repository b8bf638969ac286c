"""Finite differences along time: each step reads two neighbouring frames.

    path_length(x)      sum over t of |x[t+1] - x[t]|
    velocity_rnn(...)   an RNN fed with frame-to-frame velocities
"""

import jax
import jax.numpy as jnp


def smooth_abs(v, eps=1e-3):
    """|v| with a smooth minimum so gradients exist at 0."""
    return jnp.sqrt(v * v + eps)


def path_length(x):
    """x: [T, D] trajectory -> total length; T = 1 gives 0."""
    T = x.shape[0]
    length = jnp.zeros(())
    for t in range(T - 1):
        # distance between consecutive frames
        length = length + jnp.sum(smooth_abs(x[t + 1] - x[t]))
    return length


class VelocityRNN:
    def __init__(self, w, u):
        self.w = w
        self.u = u

    def __call__(self, frames, h):
        """frames: [T, B, D] -> states [T - 1, B, H]."""
        states = []
        for t in range(frames.shape[0] - 1):
            velocity = frames[t + 1] - frames[t]
            h = jnp.tanh(velocity @ self.w + h @ self.u)
            states.append(h)
        return jnp.stack(states)


@jax.jit
def velocity_rnn(w, u, frames, h):
    return VelocityRNN(w, u)(frames, h)


def example_inputs():
    T, B, D, H = 6, 2, 3, 4
    kx, kw, ku, kh = jax.random.split(jax.random.PRNGKey(7), 4)
    x = jax.random.normal(kx, (T, D))
    frames = jax.random.normal(kx, (T, B, D))
    w = jax.random.normal(kw, (D, H))
    u = 0.5 * jax.random.normal(ku, (H, H))
    h = jax.random.normal(kh, (B, H))
    return {
        # two frames is a one-step loop, one frame a zero-step loop
        "path_length": [(x,), (x[:2],), (x[:1],)],
        "velocity_rnn": [(w, u, frames, h), (w, u, frames[:2], h)],
    }
