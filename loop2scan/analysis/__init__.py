"""The framework-neutral loop analysis.

Passes, in the order they run for a loop (after AutoGraph's static analyses):

* ``activity``   names read and written by expressions and statements;
* ``flow``       reaching definitions and liveness over structured statements;
* ``imports``    local names of framework modules;
* ``kinds``      the kind of every value (JAX or NumPy array, Python number,
  container, object...) and its dtype where the code shows it;
* ``iteration``  what the loop iterates over, and static trip counts;
* ``outputs``    list/tuple accumulators and ``.at[].set`` buffers;
* ``inputs``     per-step inputs: slices, index values, trip counts;
* ``loop``       the decisions, in the order of ``loop.PIPELINE`` (the rules are in
  ``checks``): a :class:`loop2scan.plan.ScanPlan` or a decline.
"""

from .context import ModuleContext
from .loop import analyze_module

__all__ = ["ModuleContext", "analyze_module"]
