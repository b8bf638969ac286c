"""Every JAX rewrite pattern, executed: original vs rewritten code on random
inputs, eagerly and under ``jax.jit``, outputs and VJPs.

Sizes are all different (T=5 steps, B=3, D=4, H=6) so a swapped axis or a
reversed order cannot go unnoticed; one- and zero-step loops are included
wherever the original code runs with them.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import check_equivalent, load, rewrite, statuses

T, B, D, H = 5, 3, 4, 6
HEADER = "import jax\nimport jax.numpy as jnp\n\n"


def src(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def rand(*shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def steps(*sizes):
    return sizes or (T, 1)


# ----------------------------------------------------------------------------- index loops

RNN = src("""
    def rnn(w, u, xs, h):
        hs = []
        for t in range(xs.shape[0]):
            h = jnp.tanh(xs[t] @ w + h @ u)
            hs.append(h)
        return h, jnp.stack(hs)
""")


@pytest.mark.parametrize("n", [T, 1])
def test_rnn_range_index(n):
    r = check_equivalent(RNN, "rnn", [(rand(D, H, seed=1), rand(H, H, seed=2), rand(n, B, D, seed=3),
                                       rand(B, H, seed=4))], rewritten=1)
    assert "xs_t" in r.new_text and "jnp.stack" not in r.new_text


def test_index_on_axis_one_and_stack_on_axis_one():
    code = src("""
        def f(x, w):
            h = jnp.zeros((x.shape[0], w.shape[1]))
            outs = []
            for t in range(x.shape[1]):
                h = jnp.tanh(x[:, t] @ w + h)
                outs.append(h * 2.0)
            return jnp.stack(outs, axis=1), h
    """)
    r = check_equivalent(code, "f", [(rand(B, n, D, seed=n), rand(D, H)) for n in steps()], rewritten=1)
    assert "jnp.moveaxis(x, 1, 0)" in r.new_text
    assert "jnp.moveaxis(outs, 0, 1)" in r.new_text


def test_index_on_last_axis_with_ellipsis():
    code = src("""
        def f(x):
            acc = jnp.zeros(x.shape[:-1])
            for t in range(x.shape[-1]):
                acc = acc * 0.5 + x[..., t]
            return acc
    """)
    r = check_equivalent(code, "f", [(rand(B, D, n),) for n in steps(T, 1, 0)], rewritten=1)
    assert "jnp.moveaxis(x, -1, 0)" in r.new_text and "[...]" not in r.new_text


def test_index_used_arithmetically_is_carried_weakly_typed():
    """An index that reaches arithmetic is carried from its Python start value, so
    it promotes like the loop's int: also under strict promotion and with x64."""
    code = src("""
        def f(xs, h):
            for t in range(xs.shape[0]):
                h = h * 0.9 + xs[t] * (t + 1) - 0.01 * t
            return h
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D), rand(B, D, seed=1)) for n in steps(T, 1, 0)], rewritten=1,
                         modes=("strict", "x64"))
    assert "arange" not in r.new_text and "(h, t + 1)" in r.new_text


def test_index_used_only_to_index_is_scanned():
    code = src("""
        def f(xs, ws, h):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h @ ws[2 * t] + xs[t])
            return h
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D), rand(2 * T, D, D, seed=2), rand(B, D, seed=1))
                                     for n in steps(T, 1, 0)], rewritten=1)
    assert "jnp.arange(xs.shape[0])" in r.new_text


@pytest.mark.parametrize("spec, n", [("range(1, T)", T), ("range(2, T, 2)", T), ("range(T - 1)", T),
                                     ("range(0, T - 2)", T), ("range(1, T, 3)", 7)])
def test_range_start_stop_step_become_slices(spec, n):
    code = src(f"""
        def f(xs, h):
            T = xs.shape[0]
            outs = []
            for t in {spec}:
                h = jnp.sin(h + xs[t])
                outs.append(h)
            return h, jnp.stack(outs)
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D), rand(B, D, seed=1))], rewritten=1)
    assert "arange" not in r.new_text, r.new_text


def test_shifted_reads_are_sliced():
    code = src("""
        def f(x):
            T = x.shape[0]
            acc = jnp.zeros(x.shape[1:])
            for t in range(T - 1):
                acc = acc + x[t + 1] * x[t]
            return acc
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D),) for n in (T, 2, 1)], rewritten=1)
    assert "x[1:]" in r.new_text and "x[: T - 1]" in r.new_text


def test_read_before_start_wraps_like_python():
    # x[t - 1] at t = 0 reads x[-1] in Python: not expressible as a slice, so the index is scanned.
    code = src("""
        def f(x):
            acc = jnp.zeros(x.shape[1:])
            for t in range(x.shape[0]):
                acc = acc + x[t - 1] * 2.0 + x[t]
            return acc
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in (T, 1)], rewritten=1)
    assert "arange" in r.new_text


def test_unproven_trip_count_gets_length_guard():
    code = src("""
        def f(xs, n):
            h = jnp.zeros(xs.shape[1:])
            for t in range(n):
                h = h + xs[t]
            return h
    """)
    r = check_equivalent(code, "f", [(rand(T, D), 3), (rand(T, D), T)], rewritten=1, static_argnums=(1,))
    assert "xs[:n], length=max(n, 0)" in r.new_text
    b = load(r.new_text)
    # the original clamps out-of-range reads; the rewrite raises instead of silently differing
    with pytest.raises(Exception):
        b.f(rand(T, D), T + 2)


def test_length_only_loop():
    code = src("""
        def f(x, n):
            for _ in range(n):
                x = jnp.cos(x) * 0.5 + x
            return x
    """)
    r = check_equivalent(code, "f", [(rand(B, D), 4), (rand(B, D), 1), (rand(B, D), 0)], rewritten=1,
                         static_argnums=(1,))
    assert "length=max(n, 0)" in r.new_text


# ----------------------------------------------------------------------------- direction

def test_reversed_range_with_flipped_consumer():
    code = src("""
        def f(r, gamma):
            ret = jnp.zeros(r.shape[1:])
            out = []
            for t in reversed(range(r.shape[0])):
                ret = r[t] + gamma * ret
                out.append(ret)
            return jnp.stack(out[::-1]), ret
    """)
    r = check_equivalent(code, "f", [(rand(n, B), jnp.float32(0.9)) for n in steps()], rewritten=1)
    assert "reverse=True" in r.new_text and "[::-1]" not in r.new_text


def test_reversed_range_in_processing_order():
    code = src("""
        def f(r):
            acc = jnp.zeros(r.shape[1:])
            out = []
            for t in reversed(range(r.shape[0])):
                acc = acc * 0.5 + r[t]
                out.append(acc)
            return jnp.stack(out)
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D),) for n in steps()], rewritten=1)
    assert "out[::-1]" in r.new_text


def test_descending_range_step_minus_one():
    code = src("""
        def f(x):
            T = x.shape[0]
            acc = jnp.zeros(x.shape[1:])
            seen = []
            for t in range(T - 1, -1, -1):
                acc = jnp.tanh(acc + x[t])
                seen.append(acc)
            return jnp.stack(seen), acc
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in steps()], rewritten=1)
    assert "reverse=True" in r.new_text


def test_descending_range_step_minus_two_scans_index():
    code = src("""
        def f(x):
            acc = jnp.zeros(x.shape[1:])
            for t in range(x.shape[0] - 1, -1, -2):
                acc = acc * 0.5 + x[t]
            return acc
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in (T, 1)], rewritten=1)
    assert "arange" in r.new_text


def test_reversed_elements():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            hs = []
            for x in reversed(xs):
                h = h * 0.5 + x
                hs.append(h)
            return jnp.stack(hs), h
    """)
    check_equivalent(code, "f", [(rand(n, B),) for n in steps()], rewritten=1)


# ----------------------------------------------------------------------------- element loops

LSTM = src("""
    def lstm(p, xs, h, c):
        outs = []
        for x in xs:
            z = x @ p["wx"] + h @ p["wh"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            outs.append(h)
        return jnp.stack(outs, axis=1), (h, c)
""")


@pytest.mark.parametrize("n", [T, 1])
def test_lstm_two_carries(n):
    p = {"wx": rand(D, 4 * H, seed=1), "wh": rand(H, 4 * H, seed=2)}
    r = check_equivalent(LSTM, "lstm", [(p, rand(n, B, D), rand(B, H, seed=3), rand(B, H, seed=4))], rewritten=1)
    # no caller is seen: the step is defined at module level, the parameters passed in the carry
    assert "(h, c, _), outs = jax.lax.scan(_lstm_step, (h, c, p), jnp.asarray(xs))" in r.new_text


def test_python_list_of_arrays_is_stacked_not_scanned_as_pytree():
    code = src("""
        def f(xs, w):
            h = jnp.zeros(w.shape[1])
            for x in xs:
                h = jnp.tanh(x @ w + h)
            return h
    """)
    xs = [rand(D, seed=i) for i in range(T)]
    check_equivalent(code, "f", [(xs, rand(D, H)), (xs[:1], rand(D, H))], rewritten=1)


def test_zip_and_enumerate():
    code = src("""
        def f(xs, ms):
            h = jnp.zeros(xs.shape[1:])
            for i, (x, m) in enumerate(zip(xs, ms)):
                h = jnp.where(m > 0, h + x * i, h)
            return h
    """)
    check_equivalent(code, "f", [(rand(n, D), rand(n, D, seed=1)) for n in steps(T, 1, 0)], rewritten=1)


def test_enumerate_with_start():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            for k, x in enumerate(xs, start=3):
                h = h + x / k
            return h
    """)
    check_equivalent(code, "f", [(rand(n, D),) for n in steps()], rewritten=1)


def test_zip_bound_to_one_name():
    code = src("""
        def f(xs, ys):
            acc = jnp.zeros(xs.shape[1:])
            for pair in zip(xs, ys):
                acc = acc + pair[0] * pair[1]
            return acc
    """)
    check_equivalent(code, "f", [(rand(n, D), rand(n, D, seed=2)) for n in steps()], rewritten=1)


# ----------------------------------------------------------------------------- carries

def test_tuple_unpacked_carries_from_cell():
    code = src("""
        def cell(h, c, x):
            c = jnp.tanh(c + x)
            return h * 0.5 + c, c

        def f(xs, h, c):
            for x in xs:
                h, c = cell(h, c, x)
            return h, c
    """)
    check_equivalent(code, "f", [(rand(n, D), rand(D, seed=1), rand(D, seed=2)) for n in steps(T, 1, 0)],
                     rewritten=1)


def test_weak_typed_scalar_initial_carry():
    code = src("""
        def f(xs):
            total = 0.0
            running = []
            for x in xs:
                total = total + jnp.sum(x * x)
                running.append(total)
            return jnp.array(running), total
    """)
    check_equivalent(code, "f", [(rand(n, B, D),) for n in steps()], rewritten=1)


def test_int_scalar_carry_promoted():
    code = src("""
        def f(xs):
            total = 0
            for x in xs:
                total = total + jnp.sum(x)
            return total
    """)
    check_equivalent(code, "f", [(rand(n, D),) for n in steps()], rewritten=1)


def test_random_key_carried():
    code = src("""
        def f(key, xs):
            h = jnp.zeros(xs.shape[1:])
            for x in xs:
                key, sub = jax.random.split(key)
                h = h + x * jax.random.normal(sub, x.shape)
            return h, key
    """)
    check_equivalent(code, "f", [(jax.random.PRNGKey(7), rand(n, D)) for n in steps()], rewritten=1, grad=False)


def test_loop_invariant_flag_branch():
    code = src("""
        from functools import partial


        @partial(jax.jit, static_argnums=2)
        def f(xs, b, use_bias):
            h = jnp.zeros(xs.shape[1:])
            for x in xs:
                h = jnp.tanh(h + x)
                if use_bias:
                    h = h + b
            return h
    """)
    check_equivalent(code, "f", [(rand(T, D), rand(D, seed=1), flag) for flag in (True, False)], rewritten=1,
                     static_argnums=(2,))


def test_conditionally_written_name_becomes_carry():
    code = src("""
        from functools import partial


        @partial(jax.jit, static_argnums=1)
        def f(xs, flag):
            last = jnp.zeros(xs.shape[1:])
            acc = jnp.zeros(xs.shape[1:])
            for x in xs:
                acc = acc + x
                if flag:
                    last = acc * 2
            return acc, last
    """)
    check_equivalent(code, "f", [(rand(T, D), True), (rand(T, D), False)], rewritten=1, static_argnums=(1,))


# ----------------------------------------------------------------------------- outputs

def test_value_appended_before_update_is_bound_in_place():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            before = []
            for x in xs:
                before.append(h)
                h = jnp.tanh(h + x)
            return jnp.stack(before), h
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in steps()], rewritten=1)
    assert "y = h" in r.new_text


def test_tuple_returning_function_appended_is_made_an_array():
    # `pair` may return a tuple: jnp.array(outs) then builds a [T, 2, ...] array, so the
    # per-step value must become one array too (a scan would otherwise stack the tuple's parts)
    code = src("""
        from functools import partial


        @partial(jax.jit, static_argnums=1)
        def f(xs, pair):
            h = jnp.zeros(xs.shape[1:])
            outs = []
            for x in xs:
                h = jnp.tanh(h + x)
                outs.append(pair(h))
            return jnp.array(outs)
    """)
    r = rewrite(code)
    assert "jnp.asarray(pair(h))" in r.new_text
    a, b = load(code).f, load(r.new_text).f
    pair = lambda h: (h, 2 * h)  # noqa: E731
    for n in (T, 1):
        np.testing.assert_allclose(a(rand(n, D), pair), b(rand(n, D), pair), rtol=1e-6)


def test_tuple_accumulator():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            all_h = ()
            for x in xs:
                h = jnp.tanh(h + x)
                all_h += (h,)
            return jnp.stack(all_h, axis=-1), len(all_h), all_h[-1]
    """)
    check_equivalent(code, "f", [(rand(n, B, D),) for n in steps()], rewritten=1)


def test_preallocated_at_set():
    code = src("""
        def f(xs):
            T = xs.shape[0]
            out = jnp.zeros((T,) + xs.shape[1:])
            h = jnp.zeros(xs.shape[1:])
            for t in range(T):
                h = jnp.sin(h + xs[t])
                out = out.at[t].set(h * 3.0)
            return out, h
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D),) for n in steps(T, 1, 0)], rewritten=1)
    assert "out.at[:T].set(out_steps)" in r.new_text


def test_preallocated_at_set_axis_one_reversed_and_offset():
    code = src("""
        def f(xs):
            T = xs.shape[1]
            out = jnp.zeros((xs.shape[0], T + 1))
            acc = jnp.zeros(xs.shape[0])
            for t in reversed(range(T)):
                acc = acc + xs[:, t]
                out = out.at[:, t + 1].set(acc)
            return out
    """)
    check_equivalent(code, "f", [(rand(B, n),) for n in steps(T, 1, 0)], rewritten=1)


def test_preallocated_at_set_on_last_axis_with_ellipsis():
    code = src("""
        def f(xs):
            out = jnp.zeros(xs.shape)
            h = jnp.zeros(xs.shape[:-1])
            for t in range(xs.shape[-1]):
                h = jnp.tanh(h + xs[..., t])
                out = out.at[..., t].set(h * 2.0)
            return out, h
    """)
    r = check_equivalent(code, "f", [(rand(B, D, n),) for n in steps(T, 1, 0)], rewritten=1)
    assert "jnp.moveaxis(out_steps, 0, -1)" in r.new_text and "xs_t[" not in r.new_text


def test_preallocated_at_set_with_enumerate_counter():
    code = src("""
        def f(xs, h):
            out = jnp.zeros((xs.shape[0] + 2, xs.shape[1]))
            for i, x in enumerate(xs, 1):
                h = jnp.sin(h + x)
                out = out.at[i + 1].set(h)
            return out, h
    """)
    r = check_equivalent(code, "f", [(rand(n, D), rand(D, seed=1)) for n in steps(T, 1, 0)], rewritten=1)
    # the counter only placed the rows: it is not scanned
    assert "arange" not in r.new_text and "out.at[2 : len(xs) + 2].set(out_steps)" in r.new_text


def test_enumerate_counter_used_elsewhere_is_still_carried():
    code = src("""
        def f(xs):
            out = jnp.zeros(xs.shape)
            for i, x in enumerate(xs):
                out = out.at[i].set(x * i)
            return out
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in steps(T, 1, 0)], rewritten=1, modes=("strict", "x64"))
    assert "return i + 1, x * i" in r.new_text  # carried, weakly typed


@pytest.mark.parametrize("n", [T, 3, 2, 1, 0])
def test_range_that_may_be_empty_is_clamped(n):
    # range(n - 3) runs no step for n <= 3; the slice stop and length must not wrap around
    code = src("""
        def f(xs, h):
            for t in range(xs.shape[0] - 3):
                h = jnp.sin(h + xs[t])
            for t in range(1, xs.shape[0] - 1):
                h = jnp.cos(h) * 0.5
            return h
    """)
    r = check_equivalent(code, "f", [(rand(n, D), rand(D, seed=1))], rewritten=2)
    assert "xs[: max(xs.shape[0] - 3, 0)]" in r.new_text and "length=max(xs.shape[0] - 2, 0)" in r.new_text


@pytest.mark.parametrize("reverse", ["reversed(xs)", "reversed(range(len(xs)))", "range(len(xs) - 1, -1, -1)"])
def test_last_value_after_reversed_loop_is_index_zero(reverse):
    body = "z = jnp.tanh(x + h)" if reverse == "reversed(xs)" else "z = jnp.tanh(xs[t] + h)"
    target = "x" if reverse == "reversed(xs)" else "t"
    code = src(f"""
        def f(xs, h):
            for {target} in {reverse}:
                {body}
                h = h * 0.5 + z
            return h, z
    """)
    check_equivalent(code, "f", [(rand(n, D), rand(D, seed=1)) for n in (T, 1)], rewritten=1)


def test_inner_loop_over_a_read_the_outer_rewrite_replaces():
    # the inner scan's input is written with the outer loop's index; after the outer
    # rewrite that read is the outer step's input
    code = src("""
        def f(xs, w, h):
            for t in range(xs.shape[0]):
                s = jnp.zeros(w.shape[1])
                for r in xs[t] @ w:
                    s = s * 0.5 + jnp.sin(r)
                for q in xs[t]:
                    s = s + jnp.sum(q)
                h = jnp.tanh(h + s)
            return h
    """)
    r = check_equivalent(code, "f", [(rand(n, B, D), rand(D, H, seed=1), rand(H, seed=2)) for n in steps()],
                         rewritten=3)
    assert "xs_t @ w)" in r.new_text and "xs[t]" not in r.new_text


def test_preallocated_at_set_with_dynamic_index_fallback():
    code = src("""
        def f(xs):
            out = jnp.zeros(xs.shape)
            acc = jnp.zeros(xs.shape[1:])
            for t in range(xs.shape[0] - 1, -1, -2):
                acc = acc + xs[t]
                out = out.at[t].set(acc)
            return out
    """)
    check_equivalent(code, "f", [(rand(n, D),) for n in (T, 1)], rewritten=1)


def test_last_value_of_iteration_local():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            for t in range(9):
                y = jnp.tanh(h + xs[t])
                h = h + y
            return h, y
    """)
    r = check_equivalent(code, "f", [(rand(11, D),)], rewritten=1)
    assert "y = all_y[-1]" in r.new_text


def test_name_bound_before_and_possibly_zero_steps_is_carried():
    code = src("""
        def f(xs):
            y = jnp.zeros(xs.shape[1:])
            for x in xs:
                y = jnp.tanh(x) * 2.0
            return y
    """)
    r = check_equivalent(code, "f", [(rand(n, D),) for n in steps(T, 1, 0)], rewritten=1)
    assert "y, _ = jax.lax.scan(_f_step, y, " in r.new_text


def test_concatenate_len_and_index_consumers():
    code = src("""
        def f(xs):
            h = jnp.zeros(xs.shape[1:])
            outs = []
            for x in reversed(xs):
                h = h * 0.3 + x
                outs.append(h)
            return jnp.concatenate(outs, axis=1), len(outs), outs[0], outs[-1], jnp.concatenate(outs[::-1])
    """)
    check_equivalent(code, "f", [(rand(n, B, D),) for n in steps()], rewritten=1)


def test_two_accumulators_and_a_carry():
    code = src("""
        def f(xs, w):
            h = jnp.zeros(w.shape[1])
            hs, ys = [], []
            for x in xs:
                h = jnp.tanh(x @ w + h)
                hs.append(h)
                ys.append(jnp.sum(h) * x)
            return jnp.stack(hs), jnp.stack(ys, axis=-1)
    """)
    check_equivalent(code, "f", [(rand(n, D), rand(D, H)) for n in steps()], rewritten=1)


# ----------------------------------------------------------------------------- structure

def test_nested_loops_inner_and_outer_rewritten():
    code = src("""
        def f(xs, w):
            h = jnp.zeros(xs.shape[-1])
            rows = []
            for i in range(xs.shape[0]):
                acc = jnp.zeros(xs.shape[-1])
                for j in range(xs.shape[1]):
                    acc = jnp.tanh(acc @ w + xs[i, j] + h)
                h = acc
                rows.append(acc)
            return jnp.stack(rows), h
    """)
    r = check_equivalent(code, "f", [(rand(n, 3, D), rand(D, D, seed=5)) for n in steps()], rewritten=2)
    assert "for " not in r.new_text


def test_inner_only_when_outer_has_side_effect():
    code = src("""
        def f(xs):
            total = jnp.zeros(xs.shape[-1])
            for row in xs:
                acc = jnp.zeros(xs.shape[-1])
                for x in row:
                    acc = acc + x
                print(acc.shape)
                total = total + acc
            return total
    """)
    r = rewrite(code)
    assert [s for _, s, _ in statuses(r)] == ["declined", "rewritten"]
    np.testing.assert_allclose(load(code).f(rand(T, B, D)), load(r.new_text).f(rand(T, B, D)), rtol=1e-6)


def test_loop_in_method_of_plain_class_and_module_function():
    code = src("""
        def cell(w, h, x):
            return jnp.tanh(h @ w + x)

        class Model:
            def __init__(self, w):
                self.w = w

            def __call__(self, xs):
                h = jnp.zeros(self.w.shape[0])
                for x in xs:
                    h = cell(self.w, h, x)
                return h

        @jax.jit
        def f(w, xs):
            return Model(w)(xs)
    """)
    check_equivalent(code, "f", [(rand(D, D), rand(n, D, seed=1)) for n in steps()], rewritten=1)


def test_loop_in_nested_function_and_one_line_body():
    code = src("""
        @jax.jit
        def f(xs, scale):
            def inner(h):
                for x in xs: h = jnp.tanh(h * scale + x)
                return h
            return inner(jnp.zeros(xs.shape[1:]))
    """)
    check_equivalent(code, "f", [(rand(n, D), jnp.float32(0.5)) for n in steps()], rewritten=1)


def test_rewrite_is_idempotent_and_keeps_comments():
    code = src("""
        def f(xs, h):
            # the states
            hs = []
            for x in xs:  # over time
                # update
                h = jnp.tanh(h + x)  # cell
                hs.append(h)
            return jnp.stack(hs)
    """)
    r = rewrite(code)
    for comment in ("# the states", "# over time", "# update", "# cell"):
        assert comment in r.new_text
    assert rewrite(r.new_text).new_text is None
