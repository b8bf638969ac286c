"""Reading, discovering and safely rewriting Python source files.

This module is the only place where loop2scan touches the file system for
source files.  It guarantees three things:

* **Exact round trips.**  :func:`read_source` decodes a file without any
  newline translation and remembers its encoding (including a UTF-8 byte
  order mark), so ``encode_source(src, src.text) == src.raw`` holds for every
  file it accepts.  A file whose bytes could not be reproduced exactly is
  rejected up front instead of being silently altered later.
* **One-line errors.**  Every problem with an input file is reported as a
  :class:`SourceError` whose ``str()`` is a single ``'<path>: <reason>'``
  line, ready to be printed to stderr.  Bad input never raises anything else.
* **Safe writes.**  :func:`write_source` writes to a temporary file next to
  the target, fsyncs it, copies the permission bits and atomically replaces
  the original, but only if the original has not changed since it was read.

Encoding detection follows :func:`tokenize.detect_encoding` (a UTF-8 BOM, a
PEP 263 coding declaration on line 1 or 2, otherwise UTF-8).  It is
re-implemented here so that each failure can be explained precisely.

The module depends on the standard library only.
"""

from __future__ import annotations

import codecs
import dataclasses
import contextlib
import errno
import fnmatch
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_TEST_FILES",
    "SourceError",
    "SourceFile",
    "discover",
    "encode_source",
    "read_source",
    "write_source",
]

#: Names (fnmatch patterns) skipped while walking directories, unless the
#: caller passes its own ``exclude`` list.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
    "node_modules",
    ".eggs",
    "*.egg-info",
)

#: Test files (fnmatch patterns, like :data:`DEFAULT_EXCLUDE`): skipped while
#: walking directories unless tests are included.  A loop in a test is often a
#: reference the test compares a scan against, or runs eagerly per sample.
DEFAULT_TEST_FILES: tuple[str, ...] = ("tests", "test_*.py", "*_test.py")

_BOM = codecs.BOM_UTF8
# The same expressions as ``tokenize.cookie_re`` and ``tokenize.blank_re``.
_COOKIE_RE = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
_BLANK_RE = re.compile(rb"^[ \t\f]*(?:[#\r\n]|$)", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TEMP_SUFFIX = ".loop2scan.tmp"


class SourceError(Exception):
    """A problem with one input file.

    ``str(err)`` is a single line, ``'<path>: <message>'``, suitable for
    printing to stderr.

    Attributes:
        path: The path as the user gave it or as it was discovered (never
            resolved).
        message: The reason alone, on one line.
    """

    path: str
    message: str

    def __init__(self, path: str, message: str) -> None:
        """Create the error for ``path`` with the one-line reason ``message``."""
        message = " ".join(str(message).split("\n"))
        message = message.replace("\r", " ").strip()
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        """Return ``'<path>: <message>'`` on one line."""
        path = self.path
        if _CONTROL_RE.search(path):
            # Keep the report on one line even for odd file names.
            path = path.encode("unicode_escape").decode("ascii")
        return f"{path}: {self.message}"


@dataclass(frozen=True)
class SourceFile:
    """The exact contents of one source file, as read by :func:`read_source`.

    Attributes:
        path: Display path (as given or discovered; a relative path stays
            relative).
        real_path: ``os.path.realpath(path)``.  Writes go here, so a symbolic
            link is written through and never replaced by a regular file.
        raw: The exact bytes read.
        text: The decoded text with the original line endings kept exactly
            and a leading byte order mark removed.
        encoding: The codec used: ``'utf-8'``, ``'utf-8-sig'`` when the file
            starts with a byte order mark, or the codec named by the PEP 263
            coding declaration (normalised as :mod:`tokenize` does, so
            ``latin-1`` becomes ``'iso-8859-1'``).
        stat_key: ``(st_mtime_ns, st_size, st_ino)`` at read time, used to
            detect changes before writing.
        mode: The permission bits (``stat.S_IMODE``) at read time.
    """

    path: str
    real_path: str
    raw: bytes = field(repr=False)
    text: str = field(repr=False)
    encoding: str
    stat_key: tuple[int, int, int] | None = None  # None: not read from a file (standard input)
    mode: int | None = None


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _os_reason(exc: OSError) -> str:
    """Return the operating system's reason for ``exc`` without the file name."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """Return the ``(st_mtime_ns, st_size, st_ino)`` triple of ``st``."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stat_for_read(path: str) -> os.stat_result:
    """Stat ``path`` (following links), turning failures into SourceError."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                raise SourceError(path, "broken symbolic link") from None
            raise SourceError(
                path, f"broken symbolic link (target {target!r} does not exist)"
            ) from None
        raise SourceError(path, "no such file or directory") from None
    except PermissionError as exc:
        raise SourceError(path, f"permission denied: {_os_reason(exc)}") from None
    except OSError as exc:
        raise SourceError(path, f"cannot access file: {_os_reason(exc)}") from None
    except ValueError as exc:  # e.g. an embedded NUL character in the path
        raise SourceError(path, f"invalid path: {exc}") from None


def _check_regular(path: str, st: os.stat_result) -> None:
    """Raise SourceError unless ``st`` describes a regular file."""
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(path, "not a regular file")


def _read_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """Read all bytes of ``path``; also return the fstat taken before reading.

    The stat is taken on the open descriptor before reading, so a file that
    grows or changes while it is being read never looks unchanged later.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SourceError(path, "no such file or directory") from None
    except IsADirectoryError:
        raise SourceError(path, "is a directory, not a file") from None
    except PermissionError as exc:
        raise SourceError(path, f"permission denied: {_os_reason(exc)}") from None
    except OSError as exc:
        raise SourceError(path, f"cannot open file: {_os_reason(exc)}") from None
    try:
        with open(fd, "rb", closefd=True) as handle:
            st = os.fstat(handle.fileno())
            _check_regular(path, st)
            data = handle.read()
    except IsADirectoryError:
        raise SourceError(path, "is a directory, not a file") from None
    except PermissionError as exc:
        raise SourceError(path, f"permission denied: {_os_reason(exc)}") from None
    except OSError as exc:
        raise SourceError(path, f"cannot read file: {_os_reason(exc)}") from None
    return data, st


def _normal_encoding_name(name: str) -> str:
    """Normalise a coding declaration's name exactly as :mod:`tokenize` does."""
    enc = name[:12].lower().replace("_", "-")
    if enc == "utf-8" or enc.startswith("utf-8-"):
        return "utf-8"
    if enc in ("latin-1", "iso-8859-1", "iso-latin-1") or enc.startswith(
        ("latin-1-", "iso-8859-1-", "iso-latin-1-")
    ):
        return "iso-8859-1"
    return name


def _position(raw: bytes, offset: int) -> str:
    """Describe byte ``offset`` of ``raw`` as 'byte offset N (line L)'."""
    line = raw.count(b"\n", 0, offset) + 1
    return f"byte offset {offset} (line {line})"


def _invalid_utf8_message(raw: bytes, exc: UnicodeDecodeError, base: int) -> str:
    """Explain a UTF-8 decoding failure at ``exc.start`` (+ ``base``) of ``raw``."""
    offset = base + exc.start
    bad = raw[offset : offset + 1]
    return (
        f"not valid UTF-8: invalid byte 0x{bad.hex() or '??'} at "
        f"{_position(raw, offset)}; if the file uses another encoding, add a "
        "coding declaration such as '# -*- coding: latin-1 -*-' on its first line"
    )


def _find_cookie(path: str, raw: bytes, line: bytes, start: int, lineno: int,
                 bom: bool) -> str | None:
    """Return the codec named by a coding declaration on ``line``, if any.

    Mirrors ``tokenize.detect_encoding``'s inner ``find_cookie``: the line
    must be valid UTF-8, the codec must exist and, after a byte order mark,
    it must be UTF-8.  ``start`` is the offset of ``line`` within ``raw``.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(path, _invalid_utf8_message(raw, exc, start)) from None
    match = _COOKIE_RE.match(text)
    if match is None:
        return None
    declared = match.group(1)
    encoding = _normal_encoding_name(declared)
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SourceError(
            path,
            f"unknown encoding {declared!r} in the coding declaration on line {lineno}",
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise SourceError(
            path,
            f"the coding declaration on line {lineno} names {declared!r}, "
            "which is not a text encoding",
        )
    if bom:
        if encoding != "utf-8":
            raise SourceError(
                path,
                "starts with a UTF-8 byte order mark but the coding declaration "
                f"on line {lineno} says {declared!r}; remove one of the two",
            )
        return "utf-8-sig"
    return encoding


def _detect_encoding(path: str, raw: bytes) -> str:
    """Return the encoding of ``raw`` with ``tokenize.detect_encoding`` semantics."""
    bom = raw.startswith(_BOM)
    start = len(_BOM) if bom else 0
    default = "utf-8-sig" if bom else "utf-8"
    # Lines are split on b"\n" only, as io.BytesIO.readline would.
    end = raw.find(b"\n", start)
    end = len(raw) if end < 0 else end + 1
    first = raw[start:end]
    if not first:
        return default
    found = _find_cookie(path, raw, first, start, 1, bom)
    if found is not None:
        return found
    if not _BLANK_RE.match(first):
        return default
    start = end
    end = raw.find(b"\n", start)
    end = len(raw) if end < 0 else end + 1
    second = raw[start:end]
    if not second:
        return default
    found = _find_cookie(path, raw, second, start, 2, bom)
    return default if found is None else found


def _decode(path: str, raw: bytes, encoding: str) -> str:
    """Strictly decode ``raw`` (BOM removed for ``utf-8-sig``)."""
    if encoding == "utf-8-sig":
        body, base, codec = raw[len(_BOM):], len(_BOM), "utf-8"
    else:
        body, base, codec = raw, 0, encoding
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        if codecs.lookup(codec).name == "utf-8":
            raise SourceError(path, _invalid_utf8_message(raw, exc, base)) from None
        raise SourceError(
            path,
            f"cannot be decoded with the declared encoding {encoding!r}: "
            f"{exc.reason} at {_position(raw, base + exc.start)}",
        ) from None
    except (LookupError, ValueError, TypeError) as exc:
        raise SourceError(
            path, f"cannot be decoded with the declared encoding {encoding!r}: {exc}"
        ) from None


def read_source(path: str) -> SourceFile:
    """Read and decode one source file.

    The encoding is detected like ``tokenize.detect_encoding`` (BOM, PEP 263
    declaration on line 1 or 2, default UTF-8) and the bytes are decoded
    strictly, without newline translation.

    Args:
        path: The file to read, as the user gave it or as it was discovered.

    Returns:
        The file's bytes, text and metadata.

    Raises:
        SourceError: For any problem with the file: it does not exist, is a
            directory or another non-regular file, is a broken symbolic link,
            cannot be read, contains NUL bytes, is not valid in its encoding,
            declares an unknown codec, combines a BOM with a non-UTF-8
            declaration, or could not be re-encoded to exactly the same bytes.
    """
    path = os.fspath(path)
    st = _stat_for_read(path)
    _check_regular(path, st)
    raw, st = _read_bytes(path)
    return dataclasses.replace(decode_source(path, raw), stat_key=_stat_key(st), mode=stat.S_IMODE(st.st_mode))


def read_text(path: str) -> str:
    """The text :func:`read_source` reads from ``path`` (with the same checks),
    without what only a write needs (the real path, the file's identity): what
    the analysis reads of the other modules of a project."""
    path = os.fspath(path)
    _check_regular(path, _stat_for_read(path))
    raw, _ = _read_bytes(path)
    return _decoded(path, raw)[0]


def decode_source(path: str, raw: bytes) -> SourceFile:
    """Decode source bytes that did not come from a file of their own (standard
    input), as :func:`read_source` decodes a file's; ``path`` names them in messages."""
    text, encoding = _decoded(path, raw)
    return SourceFile(path=path, real_path=os.path.realpath(path), raw=raw, text=text, encoding=encoding)


def _decoded(path: str, raw: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of source bytes; raises SourceError for bytes that are
    not source text or that the text does not reproduce exactly."""
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        raise SourceError(
            path,
            f"binary file (contains NUL bytes, first at {_position(raw, offset)}); "
            "not a Python source file",
        )
    encoding = _detect_encoding(path, raw)
    text = _decode(path, raw, encoding)
    try:
        exact = encode_source(SourceFile(path=path, real_path=path, raw=raw, text=text, encoding=encoding),
                              text) == raw
    except SourceError:
        exact = False
    if not exact:
        raise SourceError(
            path,
            f"its bytes cannot be reproduced exactly with the encoding {encoding!r}; "
            "refusing to process it",
        )
    return text, encoding


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def encode_source(source: SourceFile, text: str) -> bytes:
    """Encode ``text`` the way ``source`` was encoded.

    The same codec is used, a UTF-8 byte order mark is kept when the file had
    one, and line endings are left exactly as they are in ``text``; hence
    ``encode_source(source, source.text) == source.raw``.

    Raises:
        SourceError: If ``text`` contains a character the encoding cannot
            represent.
    """
    try:
        if source.encoding == "utf-8-sig":
            return _BOM + text.encode("utf-8")
        return text.encode(source.encoding)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        line = exc.object.count("\n", 0, exc.start) + 1
        raise SourceError(
            source.path,
            f"cannot encode character {bad!r} (line {line}) with the file's "
            f"encoding {source.encoding!r}",
        ) from None
    except (LookupError, ValueError, TypeError) as exc:
        raise SourceError(
            source.path, f"cannot encode with the encoding {source.encoding!r}: {exc}"
        ) from None


def _display_dir(source: SourceFile) -> str:
    """Return the directory of ``source`` in display (unresolved) form."""
    return os.path.dirname(source.path) or os.curdir


def _check_unchanged(source: SourceFile) -> os.stat_result:
    """Raise SourceError if ``source.real_path`` differs from what was read.

    Both the ``(mtime_ns, size, inode)`` key and the full contents are
    compared.  Returns the fresh stat of the file.
    """
    changed = "changed on disk since it was read; not overwritten"
    try:
        st = os.stat(source.real_path)
    except FileNotFoundError:
        raise SourceError(
            source.path, "no longer exists (deleted or moved since it was read); not written"
        ) from None
    except OSError as exc:
        raise SourceError(
            source.path, f"cannot check the file before writing: {_os_reason(exc)}"
        ) from None
    if _stat_key(st) != tuple(source.stat_key) or not stat.S_ISREG(st.st_mode):
        raise SourceError(source.path, changed)
    try:
        with open(source.real_path, "rb") as handle:
            current = handle.read()
    except OSError as exc:
        raise SourceError(
            source.path, f"cannot re-read the file before writing: {_os_reason(exc)}"
        ) from None
    if current != source.raw:
        raise SourceError(source.path, changed)
    return st


def _fsync_directory(directory: str) -> None:
    """Best effort: flush the directory entry of a replaced file to disk."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_source(source: SourceFile, new_text: str) -> None:
    """Atomically replace the contents of ``source`` with ``new_text``.

    ``new_text`` is encoded with :func:`encode_source`, written to a temporary
    file in the directory of ``source.real_path``, flushed and fsynced, given
    the file's permission bits (and, where possible, its owner), then moved
    onto ``source.real_path`` with :func:`os.replace`.  A symbolic link is
    therefore written through and stays a link.

    Immediately before the replacement the file is stat-ed and re-read; if it
    differs in any way from what :func:`read_source` saw, nothing is written.
    After a successful write the ``source`` object is stale: read the file
    again before writing it a second time.

    Raises:
        SourceError: If ``new_text`` cannot be encoded, the file changed or
            disappeared since it was read, the file is read-only (its mode has
            no write bit, or the process may not write it), the directory
            does not allow creating the temporary file, or any other OS error
            occurs.  The original file is untouched and no temporary file is
            left behind.  The same cleanup happens for any other exception
            (``KeyboardInterrupt`` included), which is re-raised.
    """
    data = encode_source(source, new_text)
    real_path = source.real_path
    directory = os.path.dirname(real_path) or os.curdir
    st = _check_unchanged(source)
    if not (st.st_mode & 0o222) or not os.access(real_path, os.W_OK):
        raise SourceError(
            source.path, "file is read-only (no write permission); not overwritten"
        )

    try:
        fd, tmp_path = tempfile.mkstemp(
            prefix=f".{os.path.basename(real_path)}.", suffix=_TEMP_SUFFIX, dir=directory
        )
    except OSError as exc:
        read_only = isinstance(exc, PermissionError) or exc.errno == errno.EROFS
        prefix = "read-only directory: " if read_only else ""
        raise SourceError(
            source.path,
            f"{prefix}cannot create a temporary file in {_display_dir(source)!r} "
            f"({_os_reason(exc)}); not overwritten",
        ) from None

    pending: str | None = tmp_path
    try:
        try:
            with open(fd, "wb", closefd=True) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                if hasattr(os, "fchown") and hasattr(os, "getuid"):
                    tmp_st = os.fstat(handle.fileno())
                    if (tmp_st.st_uid, tmp_st.st_gid) != (st.st_uid, st.st_gid):
                        with contextlib.suppress(OSError):
                            os.fchown(handle.fileno(), st.st_uid, st.st_gid)
            os.chmod(tmp_path, stat.S_IMODE(st.st_mode))
            _check_unchanged(source)
            os.replace(tmp_path, real_path)
            pending = None
        except SourceError:
            raise
        except PermissionError as exc:
            raise SourceError(
                source.path, f"permission denied while writing: {_os_reason(exc)}; "
                "not overwritten"
            ) from None
        except OSError as exc:
            raise SourceError(
                source.path, f"cannot write file: {_os_reason(exc)}; not overwritten"
            ) from None
    finally:
        if pending is not None:
            with contextlib.suppress(OSError):
                os.unlink(pending)
    _fsync_directory(directory)


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


def _normalise_pattern(pattern: str) -> str:
    """Return ``pattern`` in POSIX form without a leading './' or trailing '/'."""
    if os.sep != "/":
        pattern = pattern.replace(os.sep, "/")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    stripped = pattern.rstrip("/")
    return stripped or pattern


def _is_excluded(name: str, rel: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` (one component) or ``rel`` (a POSIX path) matches."""
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(rel, pattern)
        for pattern in patterns
    )


def _relative_base(directory: str, root: str | None) -> str:
    """POSIX path of ``directory`` relative to ``root`` ('' for itself).

    Falls back to '' (paths relative to ``directory`` itself) when no root is
    given or ``directory`` lies outside it.
    """
    if root is None:
        return ""
    try:
        rel = os.path.relpath(os.path.abspath(directory), os.path.abspath(root))
    except ValueError:  # different drives on Windows
        return ""
    rel = rel.replace(os.sep, "/")
    if rel == os.curdir:
        return ""
    if rel == os.pardir or rel.startswith(os.pardir + "/"):
        return ""
    return rel


def _walk(
    directory: str, base: str, patterns: Sequence[str], errors: list[SourceError]
) -> Iterator[str]:
    """Yield ``*.py`` files below ``directory`` in sorted, depth-first order.

    Directory symlinks are not followed; broken symlinks and non-regular
    files are skipped; excluded names and paths are pruned.  Directories that
    cannot be listed are reported in ``errors``.
    """
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = []

    def listing(path: str, rel: str) -> None:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            errors.append(SourceError(path, f"cannot list directory: {_os_reason(exc)}"))
            return
        stack.append((iter(entries), rel))

    listing(directory, base)
    while stack:
        entries, rel_dir = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel = posixpath.join(rel_dir, entry.name) if rel_dir else entry.name
        if _is_excluded(entry.name, rel, patterns):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                listing(entry.path, rel)
                continue
            if not entry.name.endswith(".py"):
                continue
            if entry.is_symlink():
                # Follow links to files, skip links to directories and broken ones.
                if entry.is_dir() or not entry.is_file():
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        yield entry.path


def discover(
    paths: Sequence[str],
    *,
    exclude: Sequence[str] = (),
    extend_exclude: Sequence[str] = (),
    root: str | None = None,
    skip: Sequence[str] = (),
    force_exclude: bool = False,
) -> tuple[list[str], list[SourceError]]:
    """Expand command-line paths into the source files to process.

    * A path naming a file is always included, whatever its suffix and the
      exclusion patterns, unless ``force_exclude`` is set: then a file named
      explicitly is left out when a pattern matches it or a directory above
      it (as ruff's ``--force-exclude``: pre-commit names every file).
    * A path naming a directory (or a link to one) is walked recursively in
      sorted order collecting ``*.py`` files.  Symbolic links to directories
      met during the walk are not followed and broken links are skipped.
    * Entries found while walking are skipped when a pattern matches their
      name or their POSIX path relative to ``root`` (when given and the
      directory lies inside it) or else to the walked directory.  Patterns
      use :func:`fnmatch.fnmatchcase`; ``*`` also matches ``/``.  A directory
      named explicitly is walked even if its own name matches.
    * ``exclude`` replaces :data:`DEFAULT_EXCLUDE` when it is non-empty;
      ``extend_exclude`` adds to whichever list applies.  ``skip`` adds more
      patterns (the test files of a run that leaves tests out).

    Args:
        paths: Files and directories as given by the user.
        exclude: Patterns replacing :data:`DEFAULT_EXCLUDE`.
        extend_exclude: Patterns added to the active list.
        root: Directory that relative-path patterns are anchored to.

    Returns:
        ``(files, errors)``: the files in the order of ``paths`` (files within
        a directory sorted), de-duplicated by real path and spelled as given
        joined with the discovered parts; and one :class:`SourceError` per
        path that does not exist or directory that cannot be listed.
    """
    active = list(exclude) if exclude else list(DEFAULT_EXCLUDE)
    active.extend(extend_exclude)
    active.extend(skip)
    patterns = [_normalise_pattern(pattern) for pattern in active if pattern]

    files: list[str] = []
    errors: list[SourceError] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        given = os.fspath(given)
        try:
            st = os.stat(given)
        except FileNotFoundError:
            if os.path.islink(given):
                errors.append(SourceError(given, "broken symbolic link"))
            else:
                errors.append(SourceError(given, "no such file or directory"))
            continue
        except (OSError, ValueError) as exc:
            reason = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
            errors.append(SourceError(given, f"cannot access path: {reason}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            base = _relative_base(given, root)
            for found in _walk(given, base, patterns, errors):
                add(found)
        elif force_exclude and _force_excluded(given, root, patterns):
            continue
        else:
            add(given)
    return files, errors


def _force_excluded(path: str, root: str | None, patterns: Sequence[str]) -> bool:
    """A file named explicitly matches a pattern: its name, a directory above
    it, or its path relative to ``root`` (or to the current directory)."""
    anchor = root if root is not None else os.getcwd()
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(anchor))
    except ValueError:  # different drives on Windows
        rel = os.path.abspath(path)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        rel = os.path.basename(path)  # outside the project: only the file's own name
    parts = [p for p in rel.replace(os.sep, "/").split("/") if p not in ("", ".")]
    return any(_is_excluded(parts[i], "/".join(parts[:i + 1]), patterns) for i in range(len(parts)))
