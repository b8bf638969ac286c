"""Running statistics over a stream of batches (Welford-free, sums only).

The accumulators start as Python floats and become arrays on the first step.
"""

import jax
import jax.numpy as jnp


def batch_energy(x):
    """Mean squared activation of one batch."""
    return jnp.mean(x * x)


def _running_mean_energy_step(carry, x):
    total, count = carry
    total = total + batch_energy(x)
    count = count + 1
    # the running mean so far
    return (total, count), total / count


def running_mean_energy(batches):
    """batches: [T, B, D] -> (mean energy after each batch [T], overall mean)."""
    total = 0.0
    count = jnp.zeros((), jnp.int32)
    (total, count), history = jax.lax.scan(
        _running_mean_energy_step,
        (total, count),
        jnp.asarray(batches),
    )
    return history, total / jnp.maximum(count, 1)


class EMATracker:
    """Exponential moving averages of the mean activation and its square."""

    def __init__(self, decay: float):
        self.decay = decay

    def track(self, batches):
        mean = 0.0
        second = 0.0

        def _track_step(carry, x):
            mean, second = carry
            # statistics of this batch (scalars, like the initial values)
            m = jnp.mean(x)
            mean = self.decay * mean + (1 - self.decay) * m
            second = self.decay * second + (1 - self.decay) * m * m
            return (mean, second), None

        (mean, second), _ = jax.lax.scan(
            _track_step,
            (mean, second),
            jnp.asarray(batches),
        )
        return mean, second - mean * mean


@jax.jit
def ema_stats(batches):
    return EMATracker(0.8).track(batches)


def example_inputs():
    T, B, D = 6, 4, 3
    batches = jax.random.normal(jax.random.PRNGKey(5), (T, B, D))
    return {
        "running_mean_energy": [(batches,), (batches[:1],), (batches[:0],)],
        "ema_stats": [(batches,), (batches[:1],)],
    }
