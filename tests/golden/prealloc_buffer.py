"""Writing each step's output into a preallocated buffer with ``.at[t].set``.

A common style in code ported from NumPy, where ``out[t] = y`` was used.
"""

import jax
import jax.numpy as jnp


def leaky_integrate(x, tau):
    """Leaky integrator: v <- v + (x_t - v) / tau; returns all potentials."""
    T = x.shape[0]
    v = jnp.zeros(x.shape[1:])
    # one row per time step, filled in by the loop
    potentials = jnp.zeros((T,) + x.shape[1:])
    for t in range(T):
        v = v + (x[t] - v) / tau
        potentials = potentials.at[t].set(v)  # functional update
    return potentials, v


class EchoStateReservoir:
    """Fixed random reservoir; the states are written into a [B, T, H] buffer."""

    def __init__(self, w_in, w_res):
        self.w_in = w_in
        self.w_res = w_res

    def harvest(self, u):
        """u: [B, T, D] -> states [B, T, H]."""
        B, T, _ = u.shape
        state = jnp.zeros((B, self.w_res.shape[0]))
        states = jnp.zeros((B, T, self.w_res.shape[0]))
        for t in range(T):
            state = jnp.tanh(u[:, t] @ self.w_in + state @ self.w_res)
            states = states.at[:, t].set(state)
        return states


@jax.jit
def reservoir_states(w_in, w_res, u):
    return EchoStateReservoir(w_in, w_res).harvest(u)


def example_inputs():
    T, B, D, H = 7, 3, 2, 5
    kx, ki, kr = jax.random.split(jax.random.PRNGKey(9), 3)
    x = jax.random.normal(kx, (T, B))
    u = jax.random.normal(kx, (B, T, D))
    w_in = jax.random.normal(ki, (D, H))
    w_res = 0.3 * jax.random.normal(kr, (H, H))
    tau = jnp.float32(4.0)
    return {
        "leaky_integrate": [(x, tau), (x[:1], tau), (x[:0], tau)],
        "reservoir_states": [(w_in, w_res, u), (w_in, w_res, u[:, :1]), (w_in, w_res, u[:, :0])],
    }
