"""The package's metadata: what a plain install pulls in, and the extras."""

import os
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package's own fallback on 3.10
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _names(requirements: list[str]) -> set[str]:
    return {_name(r) for r in requirements}


def _expand(extras: dict, name: str) -> set[str]:
    """Every distribution an extra installs, following ``loop2scan[...]`` references."""
    out = set()
    for req in extras[name]:
        m = re.fullmatch(r"loop2scan\[([\w,-]+)\]", req)
        if m:
            for sub in m.group(1).split(","):
                out |= _expand(extras, sub)
        else:
            out |= _names([req])
    return out


def test_rewriting_needs_no_framework():
    deps = _project()["dependencies"]
    backports = [r for r in deps if "python_version < '3.11'" in r]
    assert _names(backports) <= {"tomli"}
    assert _names([r for r in deps if r not in backports]) == {"libcst", "click"}


def test_extras():
    extras = _project()["optional-dependencies"]
    assert {"jax", "flax", "torch-xla", "all", "dev"} <= set(extras)
    assert {"jax", "jaxlib"} <= _expand(extras, "jax")
    assert "flax" in _expand(extras, "flax")
    # torch_xla is built against one exact torch release: both are pinned together.
    pins = {_name(r): r.split("==")[1] for r in extras["torch-xla"] if "==" in r}
    assert pins["torch"] == pins["torch-xla"]
    assert _expand(extras, "all") >= _expand(extras, "jax") | _expand(extras, "flax") | _expand(extras, "torch-xla")
    assert {"pytest", "hypothesis", "jsonschema", "jax", "flax"} <= _expand(extras, "dev")


def test_console_script():
    assert _project()["scripts"]["loop2scan"] == "loop2scan.cli:entry"


def test_every_package_is_installed_and_the_emitters_under_their_own_name():
    """Subpackages are listed by name (the emitters' folder maps to another name):
    one added without being listed would be missing from an install."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    found = sorted(os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(
        os.path.join(ROOT, "loop2scan")) if "__init__.py" in files)
    assert sorted(p for p in setuptools["packages"] if p.startswith("loop2scan.") or p == "loop2scan") == found
    assert setuptools["package-dir"] == {"loop2scan_codemods": "codemods"}
    assert "codemods" not in setuptools["packages"]  # no generic top-level name in a user's environment
