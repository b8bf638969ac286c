"""Loops under ``jax.jit`` whose rewrites show how the emitted code reads.

Each function exercises one point of style: an alias of the per-step read
bound directly, a stacked list assigned back to its own name, ``_`` taken by
``for _ in range(n)``, last values carried or stacked, trip counts written as
``length=``, names after the function, nested steps, long lines.
"""

import functools
from gettext import gettext as _

import jax
import jax.numpy as jnp


@jax.jit
def elman(x, w_in, w_rec, h):
    """x: [T, B, D] -> (states [T, B, H], last state)."""

    def _elman_step(h, input_t):
        # the [B, D] inputs of step t
        h = jnp.tanh(input_t @ w_in + h @ w_rec)
        return h, h

    h, outputs = jax.lax.scan(_elman_step, h, x)
    return outputs, h


@functools.partial(jax.jit, static_argnums=2)
def power_iteration(a, v, n_steps):
    """The dominant eigenvector of ``a`` after ``n_steps`` normalised products."""

    def _power_iteration_step(v, _):
        v = a @ v
        v = v / jnp.linalg.norm(v)
        return v, None

    v, _ = jax.lax.scan(_power_iteration_step, v, length=max(n_steps, 0))
    return v


@functools.partial(jax.jit, static_argnums=2)
def tagged_decay(xs, h, n_steps):
    """Reads gettext's ``_``: the scan's unused results take another name."""
    label = _("decayed")

    def _tagged_decay_step(h, xs_t):
        h = jnp.tanh(0.5 * h + xs_t)
        return h, None

    h, _unused = jax.lax.scan(
        _tagged_decay_step,
        h,
        jnp.asarray(xs)[:n_steps],
        length=max(n_steps, 0),
    )
    return h, label == "decayed"


@jax.jit
def refine(h, w):
    """Ten refinement steps; the last state and its energy are kept."""
    out = h
    energy = 0.0

    def _refine_step(carry, _):
        h, out, energy = carry
        h = jnp.tanh(h @ w)
        out = h
        energy = jnp.float32(jnp.mean(h ** 2))
        return (h, out, energy), None

    (h, out, energy), _ = jax.lax.scan(_refine_step, (h, out, energy), length=10)
    return out, energy


@jax.jit
def readout_of_last_step(xs, h, readout):
    """The readout exists only inside the loop: its last value is stacked."""

    def _readout_of_last_step(h, xs_t):
        h = jnp.tanh(xs_t + h)
        y = h @ readout
        return h, y

    h, all_y = jax.lax.scan(_readout_of_last_step, h, xs)
    y = all_y[-1]
    return h, y


@jax.jit
def chained_decoder(h, w):
    """No per-step inputs: the trip count comes from the weights' shape."""

    def _chained_decoder_step(h, _):
        h = jnp.tanh(h @ w[0])
        return h, h

    h, states = jax.lax.scan(_chained_decoder_step, h, length=w.shape[0])
    return states


@jax.jit
def hierarchical_smoother(grid, alpha):
    """Smooths each row, then accumulates the rows: two nested scans."""
    total = jnp.zeros(grid.shape[2:])
    peak = total

    def _hierarchical_smoother_step(carry, row):
        total, peak = carry
        level = jnp.zeros(row.shape[1:])
        spread = level

        def _hierarchical_smoother_level_step(carry, value):
            level, spread = carry
            level = alpha * level + (1 - alpha) * value
            spread = jnp.maximum(spread, jnp.abs(value - level))
            return (level, spread), None

        (level, spread), _ = jax.lax.scan(
            _hierarchical_smoother_level_step,
            (level, spread),
            row,
        )
        total = total + level
        peak = jnp.maximum(peak, spread)
        return (total, peak), None

    (total, peak), _ = jax.lax.scan(_hierarchical_smoother_step, (total, peak), grid)
    return total, peak


@jax.jit
def bidirectional_encoder_with_rather_long_names(input_sequence_batch, forward_weights, backward_weights):
    """Long names: the scan calls no longer fit on one line."""
    forward_hidden_state = jnp.zeros(input_sequence_batch.shape[1:])
    backward_hidden_state = jnp.zeros(input_sequence_batch.shape[1:])

    def _bidirectional_encoder_with_rather_long_names_step(
        forward_hidden_state,
        input_sequence_batch_time_index,
    ):
        forward_hidden_state = jnp.tanh(input_sequence_batch_time_index + forward_hidden_state @ forward_weights)
        return forward_hidden_state, forward_hidden_state

    forward_hidden_state, forward_hidden_states = jax.lax.scan(
        _bidirectional_encoder_with_rather_long_names_step,
        forward_hidden_state,
        input_sequence_batch,
    )

    def _bidirectional_encoder_with_rather_long_names_reverse_step(
        backward_hidden_state,
        input_sequence_batch_time_index,
    ):
        backward_hidden_state = jnp.tanh(input_sequence_batch_time_index + backward_hidden_state @ backward_weights)
        return backward_hidden_state, backward_hidden_state

    backward_hidden_state, backward_hidden_states = jax.lax.scan(
        _bidirectional_encoder_with_rather_long_names_reverse_step,
        backward_hidden_state,
        input_sequence_batch,
        reverse=True,
    )
    return forward_hidden_states, backward_hidden_states


def example_inputs():
    T, B, D = 5, 3, 4
    kx, ki, kr, kh, ka, kv, kw, kg = jax.random.split(jax.random.PRNGKey(21), 8)
    x = jax.random.normal(kx, (T, B, D))
    w_in = jax.random.normal(ki, (D, D)) / 2
    w_rec = jax.random.normal(kr, (D, D)) / 2
    h = jax.random.normal(kh, (B, D))
    a = jax.random.normal(ka, (D, D))
    v = jax.random.normal(kv, (D,))
    w = jax.random.normal(kw, (6, D, D)) / 2
    grid = jax.random.normal(kg, (4, 3, 2))
    readout = jax.random.normal(kr, (D, 2))
    return {
        "elman": [(x, w_in, w_rec, h), (x[:1], w_in, w_rec, h)],  # no steps: the loop's stack of nothing raises
        "power_iteration": [(a @ a.T, v, 7), (a @ a.T, v, 1), (a @ a.T, v, 0)],
        "tagged_decay": [(x, h, 5), (x, h, 1), (x, h, 0)],
        "refine": [(h, w_rec)],
        "readout_of_last_step": [(x, h, readout), (x[:1], h, readout)],
        "chained_decoder": [(h, w), (h, w[:1])],
        "hierarchical_smoother": [(grid, 0.7), (grid[:1], 0.7), (grid[:, :1], 0.7), (grid[:0], 0.7)],
        "bidirectional_encoder_with_rather_long_names": [(x, w_in, w_rec), (x[:1], w_in, w_rec)],
    }
