"""LSTM over a time-major sequence, iterating the time steps directly.

    lstm(params, xs, state) -> (outputs [B, T, H], (h, c))
"""

import jax
import jax.numpy as jnp


def init_lstm(key, d_in, hidden):
    kx, kh = jax.random.split(key)
    return {
        "wx": jax.random.normal(kx, (d_in, 4 * hidden)) / jnp.sqrt(d_in),
        "wh": jax.random.normal(kh, (hidden, 4 * hidden)) / jnp.sqrt(hidden),
        "b": jnp.zeros((4 * hidden,)),
    }


def lstm(params, xs, state):
    """xs: [T, B, D]; state: (h, c), each [B, H]. Outputs are batch-major."""
    h, c = state
    outs = []
    for x in xs:
        # all four gates in one matmul, then split
        z = x @ params["wx"] + h @ params["wh"] + params["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        outs.append(h)
    # [B, T, H]: batch first for the caller
    return jnp.stack(outs, axis=1), (h, c)


class PeepholeLSTM:
    """Variant whose gates also look at the cell state."""

    def __init__(self, params, peep):
        self.params = params
        self.peep = peep

    def run(self, xs, h, c):
        for x in xs:
            z = x @ self.params["wx"] + h @ self.params["wh"] + self.params["b"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            # peepholes on the input and forget gates
            i = i + c * self.peep
            f = f + c * self.peep
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c


@jax.jit
def peephole(params, peep, xs, h, c):
    return PeepholeLSTM(params, peep).run(xs, h, c)


def example_inputs():
    T, B, D, H = 5, 3, 6, 4
    kp, kq, kx, kh, kc = jax.random.split(jax.random.PRNGKey(2), 5)
    params = init_lstm(kp, D, H)
    peep = 0.1 * jax.random.normal(kq, (H,))
    xs = jax.random.normal(kx, (T, B, D))
    h = jax.random.normal(kh, (B, H))
    c = jax.random.normal(kc, (B, H))
    return {
        "lstm": [(params, xs, (h, c)), (params, xs[:1], (h, c))],
        "peephole": [(params, peep, xs, h, c), (params, peep, xs[:1], h, c), (params, peep, xs[:0], h, c)],
    }
