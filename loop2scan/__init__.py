"""loop2scan: rewrite Python loops over layers and time steps into scans.

Library API (the command line is a thin shell over it)::

    from loop2scan import rewrite_source, analyze_source
    result = rewrite_source(text, framework="jax")
    result.new_text        # the rewritten source, or None
    result.loops           # one LoopResult per `for` loop: status, code, message, plan
"""


from .engine import analyze_source, rewrite_source, SourceResult  # noqa: E402
from .plan import LoopResult, ScanPlan  # noqa: E402

__all__ = ["analyze_source", "rewrite_source", "SourceResult", "LoopResult", "ScanPlan", "__version__"]
__version__ = "0.1.0"
