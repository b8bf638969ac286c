"""Fresh names for the code loop2scan writes (step functions, per-step inputs).

A name is fresh when nothing in the scope it lands in (or a builtin) uses it;
otherwise a numeric suffix is added: ``xs_t``, ``xs_t_1``...
"""

from __future__ import annotations

import builtins

_BUILTINS = frozenset(dir(builtins))


def fresh_name(base: str, reserved: set[str]) -> str:
    """A name based on ``base`` that is not in ``reserved`` (which it joins)."""
    name = base
    i = 0
    while name in reserved or name in _BUILTINS:
        i += 1
        name = f"{base}_{i}"
    reserved.add(name)
    return name
