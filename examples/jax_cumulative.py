"""Cumulative computations written as plain Python loops.

Demonstrates a backward loop (``reversed(range(...))``) whose collected
outputs are reversed again before stacking, and a loop whose carry starts
as a weak-typed Python float (``0.0``) and whose per-step scalars are
gathered with ``jnp.array``.

    discounted_returns(rewards, gamma) -> returns [T, B]
    discounted_returns_inputs(seed=0, steps=7, batch=3) -> (rewards, gamma)
    running_energy(xs) -> running totals [T]
    running_energy_inputs(seed=0, steps=6, batch=3, dim=5) -> (xs,)
"""

import jax
import jax.numpy as jnp


def discounted_returns(rewards, gamma):
    """rewards: [T, B] -> discounted returns [T, B], computed backwards."""
    ret = jnp.zeros(rewards.shape[1:])
    out = []
    for t in reversed(range(rewards.shape[0])):
        ret = rewards[t] + gamma * ret
        out.append(ret)
    return jnp.stack(out[::-1])


def running_energy(xs):
    """xs: [T, ...] -> running sum of squares after each step, [T]."""
    total = 0.0
    running = []
    for x in xs:
        total = total + jnp.sum(x * x)
        running.append(total)
    return jnp.array(running)


def discounted_returns_inputs(seed=0, steps=7, batch=3):
    rewards = jax.random.normal(jax.random.PRNGKey(seed), (steps, batch))
    return rewards, jnp.float32(0.9)


def running_energy_inputs(seed=0, steps=6, batch=3, dim=5):
    xs = jax.random.normal(jax.random.PRNGKey(seed), (steps, batch, dim))
    return (xs,)


if __name__ == "__main__":
    rewards, gamma = discounted_returns_inputs()
    returns = jax.jit(discounted_returns)(rewards, gamma)
    g_rewards, g_gamma = jax.grad(
        lambda r, g: jnp.sum(discounted_returns(r, g) ** 2), argnums=(0, 1)
    )(rewards, gamma)
    print("returns:", returns.shape, "grad rewards:", g_rewards.shape, "grad gamma:", g_gamma.shape)

    (xs,) = running_energy_inputs()
    running = jax.jit(running_energy)(xs)
    g_xs = jax.grad(lambda x: jnp.sum(running_energy(x)))(xs)
    print("running:", running.shape, "grad xs:", g_xs.shape)
