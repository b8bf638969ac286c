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
        self.layers = nnx.List([Block(d, hidden, rngs=rngs) for _ in range(n_layers)])
        self.final_norm = nnx.LayerNorm(d, rngs=rngs)

    @nnx.jit(static_argnames="deterministic")
    def __call__(self, x, mask, *, deterministic: bool = False):
        if len(self.layers):
            stacked_layers = nnx.merge(
                nnx.graphdef(self.layers[0]),
                jax.tree.map(lambda *s: jnp.stack(s), *[nnx.state(layer) for layer in self.layers]),
            )

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def _layer_step(x, layer):
                # every block sees the same mask
                x = layer(x, mask, deterministic=deterministic)
                return x

            x = _layer_step(x, stacked_layers)
            for i, layer in enumerate(self.layers):
                nnx.update(layer, jax.tree.map(lambda s: s[i], nnx.state(stacked_layers)))
        return self.final_norm(x)


class TwoStreams(nnx.Module):
    """Built with an `append` loop; two values flow from layer to layer."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        self.blocks = nnx.List()
        for _ in range(n_layers):
            self.blocks.append(Block(d, 2 * d, rngs=rngs))

    @nnx.jit
    def __call__(self, x, y, mask):
        if len(self.blocks):
            stacked_blocks = nnx.merge(
                nnx.graphdef(self.blocks[0]),
                jax.tree.map(lambda *s: jnp.stack(s), *[nnx.state(block) for block in self.blocks]),
            )

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def _layer_step(carry, block):
                x, y = carry
                x = block(x, mask, deterministic=True)
                y = y + 0.5 * x
                return x, y

            x, y = _layer_step((x, y), stacked_blocks)
            for i, block in enumerate(self.blocks):
                nnx.update(block, jax.tree.map(lambda s: s[i], nnx.state(stacked_blocks)))
        return x, y


@nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=nnx.Carry)
def _layer_step(x, layer, mask):
    x = layer(x, mask, deterministic=True)
    return x


class Encoder(nnx.Module):
    """Called eagerly too: the step is defined once, at module level."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        self.layers = nnx.List([Block(d, d, rngs=rngs) for _ in range(n_layers)])

    def __call__(self, x: jax.Array, mask: jax.Array):
        if len(self.layers):
            stacked_layers = nnx.merge(
                nnx.graphdef(self.layers[0]),
                jax.tree.map(lambda *s: jnp.stack(s), *[nnx.state(layer) for layer in self.layers]),
            )
            x = _layer_step(x, stacked_layers, mask)
            for i, layer in enumerate(self.layers):
                nnx.update(layer, jax.tree.map(lambda s: s[i], nnx.state(stacked_layers)))
        return x


class Residual(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.lin = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x, mask):
        return x + jnp.tanh(self.lin(x)) * mask[..., None]


class AllStates(nnx.Module):
    """Collects the output of every layer; the layers are rematerialised."""

    def __init__(self, d: int, n_layers: int, *, rngs: nnx.Rngs):
        self.layers = nnx.List([Residual(d, rngs=rngs) for _ in range(n_layers)])

    @nnx.jit
    def __call__(self, x, mask):
        states = []
        for layer in self.layers:
            x = nnx.remat(layer)(x, mask)
            states.append(x)
        return x, jnp.stack(states, axis=1)


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
