"""Discounted returns and GAE advantages, computed backwards in time.

Rewards are time-major: ``rewards[t]`` is the [B] batch of rewards at step t.
"""

import jax
import jax.numpy as jnp


def _discounted_returns_step(carry, inputs):
    ret, gamma = carry
    rewards_t, dones_t = inputs
    ret = rewards_t + gamma * (1.0 - dones_t) * ret
    return (ret, gamma), ret


def discounted_returns(rewards, dones, gamma):
    """G_t = r_t + gamma * (1 - done_t) * G_{t+1}, for every t; [T, B]."""
    ret = jnp.zeros(rewards.shape[1:])
    # walk from the last step to the first
    (ret, _), returns = jax.lax.scan(
        _discounted_returns_step,
        (ret, gamma),
        (rewards, jnp.asarray(dones)[: rewards.shape[0]]),
        reverse=True,
    )
    # returns were collected last step first
    return returns


def td_errors(rewards, values, next_values, gamma):
    """One-step TD errors (no loop, shared with the GAE code below)."""
    return rewards + gamma * next_values - values


class GAE:
    """Generalised advantage estimation with a fixed (gamma, lambda)."""

    def __init__(self, gamma, lam):
        self.gamma = gamma
        self.lam = lam

    def advantages(self, rewards, values, last_value):
        """rewards, values: [T, B]; last_value: [B]."""
        T = rewards.shape[0]
        next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
        deltas = td_errors(rewards, values, next_values, self.gamma)
        adv = jnp.zeros_like(last_value)

        def _advantages_step(adv, deltas_t):
            adv = deltas_t + self.gamma * self.lam * adv
            return adv, adv

        adv, out = jax.lax.scan(
            _advantages_step,
            adv,
            deltas[:T],
            length=T,
            reverse=True,
        )
        return out


@jax.jit
def gae(rewards, values, last_value):
    return GAE(0.99, 0.95).advantages(rewards, values, last_value)


def _n_step_return_step(carry, r):
    g, gamma = carry
    g = jnp.clip(r, -1.0, 1.0) + gamma * g
    return (g, gamma), None


def n_step_return(rewards, bootstrap, gamma):
    """Return of the first state over n rewards [n, B], bootstrapped with V(s_n) [B]."""
    g = bootstrap
    # fold the rewards in from the last one, clipped as in the training loss
    (g, _), _ = jax.lax.scan(
        _n_step_return_step,
        (g, gamma),
        jnp.asarray(rewards),
        reverse=True,
    )
    return g


def example_inputs():
    T, B = 8, 3
    kr, kd, kv, kl = jax.random.split(jax.random.PRNGKey(4), 4)
    rewards = jax.random.normal(kr, (T, B))
    dones = (jax.random.uniform(kd, (T, B)) < 0.2).astype(jnp.float32)
    values = jax.random.normal(kv, (T, B))
    last_value = jax.random.normal(kl, (B,))
    gamma = jnp.float32(0.9)
    return {
        "discounted_returns": [(rewards, dones, gamma), (rewards[:1], dones[:1], gamma)],
        "gae": [(rewards, values, last_value), (rewards[:1], values[:1], last_value)],
        "n_step_return": [(rewards, last_value, gamma), (rewards[:1], last_value, gamma),
                          (rewards[:0], last_value, gamma)],
    }
