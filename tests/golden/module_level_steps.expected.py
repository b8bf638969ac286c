"""Functions called eagerly (no ``jax.jit`` in sight): each step is defined
once at module level, so that calling the function again does not compile the
scan again.  The function's values the step reads ride in the carry."""

import jax
import jax.numpy as jnp


def _rnn_step(h, x):
    """A module function that already has the name a step would take."""
    return h + x


def identity_decorator(fn):
    return fn


def _rnn_h_step(carry, xs_t):
    h, mask, params = carry
    note = """a string
that spans lines"""
    # the update, masked
    h = mask * jnp.tanh(xs_t @ params["w"] + h @ params["u"]) + (1 - mask) * h * (len(note) > 0)
    return (h, mask, params), h  # every state


# A masked RNN: the mask and the weights are read by every step.
# (These comments stay with the function.)
@identity_decorator
def rnn(params, xs, mask, h):
    """xs: [T, B, D], mask: [B, 1] -> (states [T, B, H], last state)."""
    # one step per time index
    (h, _, _), states = jax.lax.scan(_rnn_h_step, (h, mask, params), xs)
    return states, h


def _gru_cell_step(carry, x):
    h, w = carry
    h = jnp.tanh(x @ w + h)
    return (h, w), None


class GRUCell:
    """A cell whose forward pass loops over time."""

    @staticmethod
    def forward(xs, w, h):
        (h, _), _ = jax.lax.scan(_gru_cell_step, (h, w), jnp.asarray(xs))
        return h


def gru(xs, w, h):
    return GRUCell.forward(xs, w, h)


def _decayed_sum_step(carry, xs_t):
    total, t, rate = carry
    total = total + rate ** (t + 1) * jnp.sin(xs_t)
    return (total, t + 1, rate), None


def decayed_sum(xs, rate):
    """The step index reaches arithmetic: it is carried."""
    total = jnp.zeros(xs.shape[1:])
    (total, _, _), _ = jax.lax.scan(_decayed_sum_step, (total, 0, rate), xs)
    return total


def example_inputs():
    T, B, D = 6, 3, 4
    kw, ku, kx, kh, km = jax.random.split(jax.random.PRNGKey(31), 5)
    params = {"w": jax.random.normal(kw, (D, D)) / 2, "u": jax.random.normal(ku, (D, D)) / 2}
    xs = jax.random.normal(kx, (T, B, D))
    h = jax.random.normal(kh, (B, D))
    mask = (jax.random.uniform(km, (B, 1)) > 0.3).astype(jnp.float32)
    return {
        "rnn": [(params, xs, mask, h), (params, xs[:1], mask, h)],  # no steps: the loop's stack of nothing raises
        "gru": [(xs, params["w"], h), (xs[:1], params["w"], h)],
        "decayed_sum": [(xs, jnp.float32(0.9)), (xs[:1], jnp.float32(0.9)), (xs[:0], jnp.float32(0.9))],
    }
