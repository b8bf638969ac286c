"""Per-target emitters: each turns :class:`loop2scan.plan.ScanPlan` objects into
code for one scan API.  They are thin: the dataflow is decided by the
framework-neutral analysis in ``loop2scan.analysis``."""

from __future__ import annotations


def emitter_for(framework: str):
    """The emitter class for a resolved framework name."""
    if framework == "jax":
        from .jax_scan import JaxScanEmitter

        return JaxScanEmitter
    if framework == "flax":
        from .nnx_scan import NnxScanEmitter

        return NnxScanEmitter
    if framework == "torch_xla":
        from .torch_xla_scan import TorchXlaEmitter

        return TorchXlaEmitter
    raise ValueError(f"no emitter for framework {framework!r}")
