"""The rules a loop must pass to become a scan, one module per code group.

=================  ==========  ==================================================
module             codes       what it decides
=================  ==========  ==================================================
``candidate``      L2S001-002  suppression comments; array evidence
``framework``      L2S6xx      the loop's framework against the chosen target
``structure``      L2S01x      the form of the ``for`` statement
``iteration``      L2S30x      what is iterated, loop variables, trip count
``layer_lists``    L2S303-309  loops over per-layer parameter lists
``module_stacks``  L2S320-322  loops over stacks of NNX modules (``--framework flax``)
``torch_layers``   L2S330-334  loops over lists of torch layers (``--framework torch_xla``)
``torch_time``     L2S335-336  torch time loops (``--framework torch_xla``)
``control_flow``   L2S1xx      Python control flow in the body
``side_effects``   L2S2xx      host effects, mutation, closures, conversions
``carries``        L2S4xx      values carried from step to step
``outputs``        L2S5xx      per-step outputs (accumulators)
``static_uses``    L2S307      per-step values where Python values are needed
``pays``           L2S70x      where a scan pays: short loops, unrolled on purpose, eager calls
=================  ==========  ==================================================

The order in which they run is :data:`loop2scan.analysis.loop.PIPELINE`.
"""

from . import (
    candidate,
    carries,
    control_flow,
    framework,
    iteration,
    layer_lists,
    module_stacks,
    outputs,
    pays,
    side_effects,
    static_uses,
    structure,
    torch_layers,
    torch_time,
)

#: Every code the rules can give, in code order.
RULE_CODES = tuple(sorted(
    (c for module in (candidate, structure, control_flow, side_effects, iteration, layer_lists, module_stacks,
                      torch_layers, torch_time, static_uses, carries, outputs, framework, pays) for c in module.CODES),
    key=lambda c: c.code))
