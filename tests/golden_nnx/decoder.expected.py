"""A small NNX decoder: a stack of residual blocks, each called with the same
mask and flags, and variants of how the stack is built and called."""

import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
    def __init__(self, d: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, d, rngs=rngs)
        self.drop = nnx.Dropout(0.25, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool = False):
        h = self.down(jax.nn.gelu(self.up(self.norm(x))))
        return x + self.drop(h, deterministic=deterministic) * mask[..., None]


class Decoder(nnx.Module):
    def __init__(self, d: int, hidden: int, n_layers: int, *, rngs: nnx.Rngs):
        # one block per layer
        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def _make_layers(rngs):
            return Block(d, hidden, rngs=rngs)

        self.layers = _make_layers(rngs)
        self.final_norm = nnx.LayerNorm(d, rngs=rngs)

    @nnx.jit(static_argnames="deterministic")
    def __call__(self, x, mask, *, deterministic: bool = False):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def _layer_step(x, layer):
            # every block sees the same mask
            x = layer(x, mask, deterministic=deterministic)
            return x

        x = _layer_step(x, self.layers)
        return self.final_norm(x)


class TwoStreams(nnx.Module):
    """Built with an `append` loop; two values flow from layer to layer."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def _make_blocks(rngs):
            return Block(d, 2 * d, rngs=rngs)

        self.blocks = _make_blocks(rngs)

    @nnx.jit
    def __call__(self, x, y, mask):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def _layer_step(carry, block):
            x, y = carry
            x = block(x, mask, deterministic=True)
            y = y + 0.5 * x
            return x, y

        x, y = _layer_step((x, y), self.blocks)
        return x, y


@nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=nnx.Carry)
def _layer_step(x, layer, mask):
    x = layer(x, mask, deterministic=True)
    return x


class Encoder(nnx.Module):
    """Called eagerly too: the step is defined once, at module level."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def _make_layers(rngs):
            return Block(d, d, rngs=rngs)

        self.layers = _make_layers(rngs)

    def __call__(self, x: jax.Array, mask: jax.Array):
        x = _layer_step(x, self.layers, mask)
        return x


class Residual(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x, mask):
        return x + jnp.tanh(self.lin(x)) * mask[..., None]


class AllStates(nnx.Module):
    """Collects the output of every layer; the layers are rematerialised."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def _make_layers(rngs):
            return Residual(d, rngs=rngs)

        self.layers = _make_layers(rngs)

    @nnx.jit
    def __call__(self, x, mask):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def _layer_step(x, layer):
            x = nnx.remat(layer)(x, mask)
            return x, jnp.asarray(x)

        x, states = _layer_step(x, self.layers)
        return x, jnp.moveaxis(states, 0, 1)


def example_inputs():
    """(class, constructor arguments, call arguments, call keyword arguments, stacked attributes)."""
    b, t, d = 3, 5, 8
    x = jax.random.normal(jax.random.key(1), (b, t, d))
    y = jax.random.normal(jax.random.key(2), (b, t, d))
    mask = (jax.random.uniform(jax.random.key(3), (b, t)) > 0.3).astype(jnp.float32)
    out = []
    for n in (1, 2, 5):
        out += [
            ("Decoder", {"d": d, "hidden": 12, "n_layers": n}, (x, mask), {"deterministic": True}, ["layers"]),
            ("Decoder", {"d": d, "hidden": 12, "n_layers": n}, (x, mask), {"deterministic": False}, ["layers"]),
            ("TwoStreams", {"d": d, "n_layers": n}, (x, y, mask), {}, ["blocks"]),
            ("Encoder", {"d": d, "n_layers": n}, (x, mask), {}, ["layers"]),
            ("AllStates", {"d": d, "n_layers": n}, (x, mask), {}, ["layers"]),
        ]
    return out
