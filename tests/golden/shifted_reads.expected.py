"""Finite differences along time: each step reads two neighbouring frames.

    path_length(x)      sum over t of |x[t+1] - x[t]|
    velocity_rnn(...)   an RNN fed with frame-to-frame velocities
"""

import jax
import jax.numpy as jnp


def smooth_abs(v, eps=1e-3):
    """|v| with a smooth minimum so gradients exist at 0."""
    return jnp.sqrt(v * v + eps)


def _path_length_step(length, inputs):
    x_t_next, x_t = inputs
    # distance between consecutive frames
    length = length + jnp.sum(smooth_abs(x_t_next - x_t))
    return length, None


def path_length(x):
    """x: [T, D] trajectory -> total length; T = 1 gives 0."""
    T = x.shape[0]
    length = jnp.zeros(())
    length, _ = jax.lax.scan(_path_length_step, length, (x[1:], x[: T - 1]))
    return length


class VelocityRNN:
    def __init__(self, w, u):
        self.w = w
        self.u = u

    def __call__(self, frames, h):
        """frames: [T, B, D] -> states [T - 1, B, H]."""

        def _velocity_rnn_step(h, inputs):
            frames_t_next, frames_t = inputs
            velocity = frames_t_next - frames_t
            h = jnp.tanh(velocity @ self.w + h @ self.u)
            return h, h

        h, states = jax.lax.scan(
            _velocity_rnn_step,
            h,
            (frames[1:], frames[: frames.shape[0] - 1]),
        )
        return states


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
