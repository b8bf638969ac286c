"""The framework versions emitted code must run on.

Taken, in this order, from ``target-versions`` in ``[tool.loop2scan]``
(``target-versions = { jax = "0.4.20" }``), from the project's declared
dependencies (the lowest version ``[project] dependencies`` or an
optional-dependency group allows: ``jax>=0.4.20`` means code must run on
0.4.20), or from the installed package's metadata (never by importing the
framework: a pre-commit environment has none).  When none says, the newest
constructs are emitted and the report says so.

What each construct needs (``docs/versions.md`` lists it for users):

====================  ======================  ====================================
construct             needs                   otherwise
====================  ======================  ====================================
``jax.lax.scan``      jax >= 0.2.0            the loop is declined (``L2S015``)
``jax.tree.map``      jax >= 0.4.25           ``jax.tree_util.tree_map``
``jax.tree.leaves``   jax >= 0.4.25           ``jax.tree_util.tree_leaves``
====================  ======================  ====================================
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Version = tuple[int, ...]

#: The first JAX release with each construct the emitter may write.
JAX_SCAN = (0, 2, 0)
JAX_TREE_MODULE = (0, 4, 25)


def parse_version(text: str) -> Optional[Version]:
    """``"0.4.25"`` -> ``(0, 4, 25)``; the numeric release part only (``0.4.26rc1``
    is ``(0, 4, 26)``); ``None`` when ``text`` starts with no number."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def show(version: Version) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class TargetVersion:
    """The version of one framework the emitted code must run on, and where it came from."""

    package: str
    version: Optional[Version]
    source: str  # "configuration", "dependencies", "installed" or "unknown"

    def describe(self) -> str:
        if self.version is None:
            return (f"no {self.package} version found (configuration, declared dependencies, installed "
                    f"packages): the newest constructs are emitted")
        where = {"configuration": "target-versions in [tool.loop2scan]",
                 "dependencies": "the lowest version the project's dependencies allow",
                 "installed": "the installed package"}[self.source]
        return f"{self.package} {show(self.version)} ({where})"

    def at_least(self, version: Version) -> bool:
        """The target has what ``version`` brought (an unknown target is the newest)."""
        return self.version is None or self.version >= version


def _lowest_allowed(requirement: str, package: str) -> Optional[Version]:
    """The lowest version of ``package`` a requirement string allows (``None``:
    not this package, or no lower bound)."""
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(?P<spec>[^;@]*)", requirement)
    if m is None or re.sub(r"[-_.]+", "-", m.group(1)).lower() != package:
        return None
    lows = []
    for clause in m.group("spec").split(","):
        c = re.match(r"\s*(>=|==|~=|===|>)\s*([^\s,]+)", clause)
        if c is not None and "*" not in c.group(2):
            v = parse_version(c.group(2))
            if v is not None:
                lows.append(v)
    return max(lows) if lows else None


def declared(pyproject: Optional[dict], package: str) -> Optional[Version]:
    """The lowest version of ``package`` the project's declared dependencies allow."""
    if not pyproject:
        return None
    project = pyproject.get("project", {}) if isinstance(pyproject.get("project"), dict) else {}
    requirements = list(project.get("dependencies", []) or [])
    for group in (project.get("optional-dependencies", {}) or {}).values():
        requirements += list(group or [])
    found = [v for v in (_lowest_allowed(r, package) for r in requirements if isinstance(r, str)) if v]
    return min(found) if found else None


def installed(package: str) -> Optional[Version]:
    """The installed version, from the package's metadata (the package is not imported)."""
    from importlib import metadata

    try:
        return parse_version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def target_version(package: str, configured: Optional[str], pyproject_path: Optional[str]) -> TargetVersion:
    if configured is not None:
        return TargetVersion(package, parse_version(configured), "configuration")
    data = None
    if pyproject_path is not None and os.path.isfile(pyproject_path):
        try:
            with open(pyproject_path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            data = None
    version = declared(data, package)
    if version is not None:
        return TargetVersion(package, version, "dependencies")
    version = installed(package)
    if version is not None:
        return TargetVersion(package, version, "installed")
    return TargetVersion(package, None, "unknown")
