"""``[tool.loop2scan]`` in ``pyproject.toml``.

The configuration file is the nearest ``pyproject.toml`` above the common
directory of the given paths (or the one named by ``--config``); command-line
options override it.  Unknown keys are an error, so a typo never silently
changes nothing.

    [tool.loop2scan]
    framework = "jax"                 # auto | jax | flax | torch_xla
    layout = "stacked"                # per-layer parameter lists: stacked (at construction) | keep
    exclude = ["build", "third_party"]  # replaces the default excludes
    extend-exclude = ["*_pb2.py"]      # adds to them
    min-trip-count = 4                # leave constant trip counts below this alone (L2S701)
    eager = "compile-once"            # or "skip": decline loops with no JAX transformation seen (L2S702),
                                      # or "closure": closure steps everywhere (code always run under jit)
    assume-pure = false               # torch_xla: `is_layer_pure=True` where the list's own layers are scanned
    include-tests = false             # directory runs skip test files (explicit files too with force-exclude)
    test-files = ["tests", "test_*.py", "*_test.py"]  # what counts as a test file
    force-exclude = false             # apply exclude / test-files to files named explicitly too (pre-commit)
    select = ["L2S3"]                 # report only these codes (prefixes); rewrites are always reported
    ignore = ["L2S001"]               # never report these codes
    unroll = 2                        # `unroll=` of every emitted scan (steps per iteration of XLA's loop)
    layer-axis-name = "layers"        # NNX layer stacks: the sharding name of the stacked layer axis
    rtol = 1e-5                       # --check tolerances (default: by dtype)
    atol = 1e-6
    target-versions = { jax = "0.4.20" }  # what emitted code must run on (default: the declared dependencies,
                                      # else the installed packages; see loop2scan.versions)

The line length of emitted code is ``line-length`` of ``[tool.ruff]`` (or else
``[tool.black]``) in the same file, 88 when neither sets it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .codes import CodeSelection
from .files import DEFAULT_TEST_FILES
from .policy import DEFAULT_LINE_LENGTH, DEFAULT_MIN_TRIP_COUNT, EAGER_MODES, line_length_from

KNOWN_KEYS = {"framework", "layout", "exclude", "extend-exclude", "min-trip-count", "eager", "assume-pure",
              "include-tests",
              "test-files", "force-exclude", "select", "ignore", "unroll", "rtol", "atol",
              "target-versions", "layer-axis-name"}


class ConfigError(Exception):
    pass


@dataclass
class Config:
    framework: str = "auto"
    layout: str = "stacked"
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    min_trip_count: int = DEFAULT_MIN_TRIP_COUNT
    eager: str = "compile-once"
    assume_pure: bool = False
    include_tests: bool = False
    force_exclude: bool = False
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    unroll: Optional[int] = None
    layer_axis_name: str = "layers"
    target_versions: dict = field(default_factory=dict)  # package -> version string
    rtol: Optional[float] = None
    atol: Optional[float] = None
    test_files: tuple[str, ...] = DEFAULT_TEST_FILES
    line_length: int = DEFAULT_LINE_LENGTH  # from [tool.ruff] / [tool.black]
    examples: list = field(default_factory=list)  # check.Example, from [tool.loop2scan.examples]
    path: Optional[str] = None  # the pyproject.toml it came from
    root: Optional[str] = None  # its directory
    raw: dict = field(default_factory=dict)  # the whole [tool.loop2scan] table


def _start(paths: Sequence[str]) -> str:
    """The common directory of ``paths`` (the current one when none exists)."""
    existing = [os.path.abspath(p) for p in paths if os.path.exists(p)] or [os.getcwd()]
    dirs = [p if os.path.isdir(p) else os.path.dirname(p) for p in existing]
    try:
        return os.path.commonpath(dirs)
    except ValueError:
        return os.getcwd()


def nearest_pyproject(paths: Sequence[str]) -> Optional[str]:
    """The nearest ``pyproject.toml`` of any kind above the common directory of
    ``paths`` (its declared dependencies say which framework versions the code uses)."""
    cur = _start(paths)
    while True:
        candidate = os.path.join(cur, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def find_pyproject(paths: Sequence[str]) -> Optional[str]:
    """The nearest ``pyproject.toml`` containing ``[tool.loop2scan]`` (or the
    first one at a repository root) above the common directory of ``paths``."""
    cur = _start(paths)
    while True:
        candidate = os.path.join(cur, "pyproject.toml")
        if os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as f:
                    data = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError):
                data = {}
            if "loop2scan" in data.get("tool", {}):
                return candidate
        if os.path.isdir(os.path.join(cur, ".git")) or os.path.isdir(os.path.join(cur, ".hg")):
            return candidate if os.path.isfile(candidate) else None
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def load_config(paths: Sequence[str], explicit: Optional[str] = None) -> Config:
    path = explicit or find_pyproject(paths)
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    table = data.get("tool", {}).get("loop2scan", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.loop2scan] must be a table")
    line_length = line_length_from(data)
    unknown = sorted(set(table) - KNOWN_KEYS - {"examples"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [tool.loop2scan]: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(KNOWN_KEYS))})")
    cfg = Config(path=path, root=os.path.dirname(path), raw=table)
    if line_length is not None:
        cfg.line_length = line_length
    if "min-trip-count" in table:
        value = table["min-trip-count"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: min-trip-count must be a non-negative integer, not {value!r}")
        cfg.min_trip_count = value
    if "target-versions" in table:
        value = table["target-versions"]
        from .versions import parse_version

        if not isinstance(value, dict) or not all(isinstance(v, str) and parse_version(v) for v in value.values()):
            raise ConfigError(f'{path}: target-versions must be a table of version strings, like {{ jax = "0.4.30" }}')
        unknown_packages = sorted(set(value) - {"jax"})
        if unknown_packages:
            raise ConfigError(f"{path}: target-versions: no target of this version uses "
                              f"{', '.join(unknown_packages)} (known: jax)")
        cfg.target_versions = dict(value)
    if "unroll" in table:
        value = table["unroll"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{path}: unroll must be a positive integer, not {value!r}")
        cfg.unroll = value
    if "layer-axis-name" in table:
        value = table["layer-axis-name"]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: layer-axis-name must be a non-empty string, not {value!r}")
        cfg.layer_axis_name = value
    for key in ("rtol", "atol"):
        if key in table:
            value = table[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{path}: {key} must be a non-negative number, not {value!r}")
            setattr(cfg, key, float(value))
    if "eager" in table:
        if table["eager"] not in EAGER_MODES:
            raise ConfigError(f"{path}: eager must be one of {', '.join(repr(m) for m in EAGER_MODES)}, "
                              f"not {table['eager']!r}")
        cfg.eager = table["eager"]
    for key in ("include-tests", "force-exclude", "assume-pure"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"{path}: {key} must be true or false")
            setattr(cfg, key.replace("-", "_"), table[key])
    if "framework" in table:
        if not isinstance(table["framework"], str):
            raise ConfigError(f"{path}: framework must be a string")
        cfg.framework = table["framework"]
    if "layout" in table:
        if table["layout"] not in ("stacked", "keep"):
            raise ConfigError(f"{path}: layout must be \"stacked\" or \"keep\", not {table['layout']!r}")
        cfg.layout = table["layout"]
    if "examples" in table:
        from .check import ExampleConfigError, parse_examples

        if not isinstance(table["examples"], dict):
            raise ConfigError(f"{path}: [tool.loop2scan.examples] must be a table")
        try:
            cfg.examples = parse_examples(table["examples"], f"{path}: [tool.loop2scan.examples]")
        except ExampleConfigError as e:
            raise ConfigError(str(e)) from None
    for key in ("exclude", "extend-exclude", "test-files", "select", "ignore"):
        if key in table:
            value = table[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key} must be a list of strings")
            setattr(cfg, key.replace("-", "_"), tuple(value))
    try:
        CodeSelection(cfg.select, cfg.ignore)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg
