"""The NNX decoder written by hand with a stacked layer module and ``nnx.scan``."""

import jax
import jax.numpy as jnp
from flax import nnx


def sinusoidal_positions(length: int, d: int) -> jax.Array:
    position = jnp.arange(length)[:, None]
    scale = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, d, 2) / d)
    return jnp.concatenate([jnp.sin(position * scale), jnp.cos(position * scale)], axis=-1)


class Block(nnx.Module):
    def __init__(self, d: int, heads: int, hidden: int, *, rngs: nnx.Rngs):
        self.attn_norm = nnx.RMSNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=d, decode=False, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, d, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x, mask, positions, *, deterministic: bool = False):
        h = self.attn_norm(x) + positions
        x = x + self.attn(h, mask=mask, deterministic=True)
        h = self.down(jax.nn.gelu(self.up(self.mlp_norm(x))))
        return x + self.dropout(h, deterministic=deterministic)


class Decoder(nnx.Module):
    def __init__(self, vocab: int, d: int, heads: int, hidden: int, n_layers: int, *, rngs: nnx.Rngs):
        self.d = d
        self.embed = nnx.Embed(vocab, d, rngs=rngs)

        @nnx.split_rngs(splits=n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_block(rngs):
            return Block(d, heads, hidden, rngs=rngs)

        self.layers = make_block(rngs)  # every variable has a leading layer axis
        self.final_norm = nnx.RMSNorm(d, rngs=rngs)

    @nnx.jit(static_argnames="deterministic")
    def __call__(self, tokens, *, deterministic: bool = True):
        mask = nnx.make_causal_mask(tokens)
        positions = sinusoidal_positions(tokens.shape[1], self.d)

        @nnx.scan(in_axes=(nnx.Carry, 0, None, None), out_axes=nnx.Carry)
        def forward(x, layer, mask, positions):
            return layer(x, mask, positions, deterministic=deterministic)

        x = forward(self.embed(tokens), self.layers, mask, positions)
        return self.embed.attend(self.final_norm(x))


def example_inputs(module=None, n_layers=8, seed=0, deterministic=False):
    decoder = Decoder if module is None else module.Decoder
    model = decoder(vocab=50, d=32, heads=4, hidden=48, n_layers=n_layers, rngs=nnx.Rngs(seed))
    tokens = jax.random.randint(jax.random.key(seed + 1), (3, 7), 0, 50)
    return {"self": model, "args": (tokens,), "kwargs": {"deterministic": deterministic}}
