"""A Flax NNX decoder: a stack of attention and MLP blocks, looped over in `__call__`.

Every block is a pre-norm block (causal self-attention and an MLP), called
with the same attention mask and positions.

Demonstrates the `--framework flax` target (chosen by `auto`: the file imports
`flax.nnx`): loop2scan builds `self.layers` as one stacked module (an
`nnx.vmap` over a factory, one split of `rngs` per layer) and turns the loop in
`__call__` into an `nnx.scan` over it.

    Decoder(vocab, d, heads, hidden, n_layers, *, rngs)
    Decoder.__call__(tokens [batch, time], *, deterministic=True) -> logits [batch, time, vocab]
    example_inputs(module=None (this module), n_layers=8) -> {"self": Decoder, "args": (tokens,), "kwargs": {...}}
"""

import jax
import jax.numpy as jnp
from flax import nnx


def sinusoidal_positions(length: int, d: int) -> jax.Array:
    """[length, d] sine and cosine features of each position."""
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
        self.layers = nnx.List([Block(d, heads, hidden, rngs=rngs) for _ in range(n_layers)])
        self.final_norm = nnx.RMSNorm(d, rngs=rngs)

    @nnx.jit(static_argnames="deterministic")
    def __call__(self, tokens, *, deterministic: bool = True):
        mask = nnx.make_causal_mask(tokens)
        positions = sinusoidal_positions(tokens.shape[1], self.d)
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, mask, positions, deterministic=deterministic)
        return self.embed.attend(self.final_norm(x))


def example_inputs(module=None, n_layers=8, seed=0, deterministic=False):
    """A model built from ``module``'s classes (the original or the rewritten
    module) and a batch of tokens; in train mode (dropout on) by default."""
    decoder = Decoder if module is None else module.Decoder
    model = decoder(vocab=50, d=32, heads=4, hidden=48, n_layers=n_layers, rngs=nnx.Rngs(seed))
    tokens = jax.random.randint(jax.random.key(seed + 1), (3, 7), 0, 50)
    return {"self": model, "args": (tokens,), "kwargs": {"deterministic": deterministic}}


if __name__ == "__main__":
    ex = example_inputs()
    model, (tokens,) = ex["self"], ex["args"]
    print("logits:", model(tokens).shape)

    def loss(model, tokens):
        logits = model(tokens, deterministic=False)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    # the values depend on the initial weights, which stacked construction draws differently
    print("loss is finite:", bool(jnp.isfinite(loss(model, tokens))))
    grads = nnx.grad(loss)(model, tokens)
    print("parameters with a gradient:", sum(g.size for g in jax.tree.leaves(grads)))
