"""The registry of compile-time workloads.

A workload is one function of one example program, measured at several sizes
(trip counts) in three variants:

* ``loop``        the example as written (``examples/<name>.py``, a Python ``for`` loop),
* ``rewritten``   what ``loop2scan.rewrite_source`` makes of that file, produced at
                  benchmark time (a temporary file, imported by path),
* ``handwritten`` the expert ``jax.lax.scan`` twin (``examples/handwritten/<name>.py``,
                  same function names and signatures).

Adding a workload is one entry in ``WORKLOADS`` (and, when no existing builder
fits, one builder function below).  A builder has the signature::

    def build(variant, inputs, size, **fixed) -> (fn, args)

``variant`` is the imported module of the variant being measured, ``inputs``
the imported looped example (its ``example_inputs``-style helpers build the
arguments, so all three variants get identical inputs), ``size`` the trip count
and ``fixed`` the entry's fixed dimensions.  When a rewrite changes how the
inputs are built (e.g. parameters stacked at construction), build them with the
variant's own constructor.  It returns the function to compile
and its arguments; the worker (``compile_worker.py``) then measures
``jax.jit(fn).lower(*args).compile()`` and the steady-state run time.  Builders
import jax inside the function: this module is also imported by the driver,
which must stay light.

Planned entries follow the same pattern (see ``PLANNED`` at the end of this
file); they are not registered yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workload:
    name: str                      # identifier used in results and plots
    title: str                     # human-readable description
    example: str                   # looped example, relative to the repository root
    handwritten: str | None        # hand-written scan twin, relative to the repository root
    builder: str                   # name of a builder function in this module
    size_name: str                 # what the size means ("T" time steps, "L" layers)
    sizes: tuple[int, ...]         # full run
    quick_sizes: tuple[int, ...]   # --quick run
    fixed: dict = field(default_factory=dict)  # fixed dimensions, passed to the builder and recorded
    framework: str = "jax"         # framework given to loop2scan.rewrite_source
    runner: str = "jax"            # how the worker compiles and runs it (see compile_worker.RUNNERS)
    targets: tuple[str, ...] = ()  # names of target checks applied to this workload (see compile_bench.py)
    loop_target_size: int = 512    # "loop_vs_scan_compile": at this size ...
    loop_target_ratio: float = 30.0  # ... the rewritten scan compiles at least this many times faster


# --------------------------------------------------------------------------- builders

def rnn_forward(variant, inputs, size, *, batch, d_in, hidden):
    args = inputs.example_inputs(seed=0, steps=size, batch=batch, d_in=d_in, hidden=hidden)
    return variant.rnn, args


def rnn_grad(variant, inputs, size, *, batch, d_in, hidden):
    import jax

    args = inputs.example_inputs(seed=0, steps=size, batch=batch, d_in=d_in, hidden=hidden)
    return jax.grad(variant.loss), args


def mlp_grad(variant, inputs, size, *, width, batch):
    import jax

    # each variant builds its own parameter layout (a list of (w, b) for the loop, stacked arrays for
    # the scans: the rewritten init_mlp returns them stacked), with the same values
    params = variant.init_mlp(jax.random.PRNGKey(0), size, width)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, width))
    return jax.grad(variant.loss), (params, x)


def nnx_decoder_grad(variant, inputs, size, *, vocab, d, heads, hidden, batch, seq):
    """The NNX decoder example with ``size`` layers: ``nnx.grad`` of a loss with
    respect to its parameters, as a pure function of the split state."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = variant.Decoder(vocab, d, heads, hidden, size, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, vocab)

    def loss(model, tokens):
        logits = model(tokens, deterministic=True)
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    def grads(params, rest, tokens):
        # the model is rebuilt inside the trace: its `nnx.jit` method then runs in the same trace
        return nnx.grad(loss)(nnx.merge(graphdef, params, rest), tokens)

    return grads, (params, rest, tokens)


# --------------------------------------------------------------------------- registry

RNN_FIXED = {"batch": 8, "d_in": 32, "hidden": 128}
RNN_SIZES = (16, 32, 64, 128, 256, 512)
RNN_QUICK = (16, 128)

def _rnn(name: str, title: str, builder: str) -> Workload:
    """The JAX RNN example, forward or under ``jax.grad``."""
    return Workload(name=name, title=title, example="examples/jax_rnn.py",
                    handwritten="examples/handwritten/jax_rnn.py", builder=builder, size_name="T",
                    sizes=RNN_SIZES, quick_sizes=RNN_QUICK, fixed=RNN_FIXED,
                    targets=("loop_vs_scan_compile", "rewritten_vs_handwritten"))


WORKLOADS: list[Workload] = [
    _rnn("jax_rnn_forward", "JAX RNN `rnn(params, xs, h0)`", "rnn_forward"),
    _rnn("jax_rnn_grad", "JAX RNN `jax.grad(loss)`", "rnn_grad"),
    Workload(
        name="jax_mlp_grad",
        title="JAX MLP over a parameter list, `jax.grad(loss)`",
        example="examples/jax_mlp.py",
        handwritten="examples/handwritten/jax_mlp.py",
        builder="mlp_grad",
        size_name="L",
        sizes=(8, 16, 32, 64, 128, 256, 512),
        quick_sizes=(8, 64),
        fixed={"width": 128, "batch": 8},
        targets=("loop_vs_scan_compile", "rewritten_vs_handwritten", "run_vs_loop"),
        loop_target_size=256,
        loop_target_ratio=4.0,
    ),
    Workload(
        name="flax_nnx_decoder_grad",
        title="Flax NNX decoder (attention + MLP blocks), `jax.grad` of the loss",
        example="examples/nnx_decoder.py",
        handwritten="examples/handwritten/nnx_decoder.py",
        builder="nnx_decoder_grad",
        size_name="L",
        sizes=(16, 32, 64, 128),
        quick_sizes=(16, 64),
        fixed={"vocab": 256, "d": 128, "heads": 4, "hidden": 512, "batch": 4, "seq": 64},
        framework="flax",
        targets=("loop_vs_scan_compile", "rewritten_vs_handwritten"),
        loop_target_size=64,
        loop_target_ratio=5.0,
    ),
]


# --------------------------------------------------------------------------- planned
#
# Planned entries: not registered, never measured, no results are reported for
# them.  To add one, copy the pattern into WORKLOADS (add targets=(...) to have
# the rewritten-vs-hand-written checks applied to it):
#
# Flax linen: the pattern of `flax_nnx_decoder_grad`, with framework="flax-linen".
#
# torch_xla: framework="torch_xla", runner="torch_xla"; add a runner to
# compile_worker.RUNNERS that compiles with torch_xla (first call after
# `torch_xla.sync()`, PJRT_DEVICE=CPU) and times steady-state calls; the builder
# returns (fn, args) as above.

PLANNED = ("flax_linen_decoder_grad", "torch_xla_linear_grad")


def get(name: str) -> Workload:
    for w in WORKLOADS:
        if w.name == name:
            return w
    raise KeyError(f"unknown workload {name!r}; registered: {', '.join(w.name for w in WORKLOADS)}")
