"""A two-level recurrence: sentences made of words, words made of characters.

The inner loop reads characters, the outer loop reads words; both carry state.
"""

import jax
import jax.numpy as jnp


def mix(a, b, w):
    return jnp.tanh(a @ w + b)


def _hierarchical_encode_step(carry, chars_i):
    sentence, chars, w_char, w_word = carry
    # read the characters of word i
    word = jnp.zeros(chars.shape[-1])

    def _hierarchical_encode_word_step(word, j):
        word = mix(word, chars_i[j], w_char)
        return word, None

    word, _ = jax.lax.scan(
        _hierarchical_encode_word_step,
        word,
        jnp.arange(chars.shape[1]),
    )
    # then fold the word into the sentence
    sentence = mix(sentence, word, w_word)
    return (sentence, chars, w_char, w_word), word


def hierarchical_encode(chars, w_char, w_word):
    """chars: [W, C, D] (words x characters x features) -> (word states [W, D], sentence state [D])."""
    sentence = jnp.zeros(chars.shape[-1])
    (sentence, _, _, _), word_states = jax.lax.scan(
        _hierarchical_encode_step,
        (sentence, chars, w_char, w_word),
        chars,
    )
    return word_states, sentence


class GridSmoother:
    """Smooths a [R, C] grid row by row, column by column."""

    def __init__(self, alpha):
        self.alpha = alpha

    def smooth(self, grid):
        total = jnp.zeros(grid.shape[2:])

        def _smooth_step(total, row):
            level = jnp.zeros(row.shape[1:])

            def _smooth_level_step(level, value):
                level = self.alpha * level + (1 - self.alpha) * value
                return level, None

            level, _ = jax.lax.scan(_smooth_level_step, level, row)
            total = total + level
            return total, None

        total, _ = jax.lax.scan(_smooth_step, total, grid)
        return total


@jax.jit
def smooth_grid(grid):
    return GridSmoother(0.7).smooth(grid)


def example_inputs():
    W, C, D = 4, 3, 5
    kc, kw, kv, kg = jax.random.split(jax.random.PRNGKey(11), 4)
    chars = jax.random.normal(kc, (W, C, D))
    w_char = jax.random.normal(kw, (D, D)) / 3
    w_word = jax.random.normal(kv, (D, D)) / 3
    grid = jax.random.normal(kg, (W, C))
    return {
        "hierarchical_encode": [(chars, w_char, w_word), (chars[:1], w_char, w_word), (chars[:, :1], w_char, w_word)],
        "smooth_grid": [(grid,), (grid[:1],), (grid[:0],), (grid[:, :0],)],
    }
