"""Cumulative computations written with ``jax.lax.scan``.

Reference scan formulations of ``examples/jax_cumulative.py``: same
signatures, return structures and dtypes. The backward recurrence uses
``reverse=True``, which already emits outputs in forward time order.

    discounted_returns(rewards, gamma) -> returns [T, B]
    running_energy(xs) -> running totals [T]
"""

import jax
import jax.numpy as jnp


def discounted_returns(rewards, gamma):
    """rewards: [T, B] -> discounted returns [T, B], computed backwards."""

    def step(ret, r):
        ret = r + gamma * ret
        return ret, ret

    _, returns = jax.lax.scan(step, jnp.zeros(rewards.shape[1:]), rewards, reverse=True)
    return returns


def running_energy(xs):
    """xs: [T, ...] -> running sum of squares after each step, [T]."""

    def step(total, x):
        total = total + jnp.sum(x * x)
        return total, total

    _, running = jax.lax.scan(step, jnp.zeros((), xs.dtype), xs)
    return running
