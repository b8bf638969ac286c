"""Tests for loop2scan.files: reading, encoding round trips, safe writes, discovery."""

from __future__ import annotations

import ast
import errno
import io
import os
import pickle
import random
import stat
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

import pytest

from loop2scan import files
from loop2scan.files import (
    DEFAULT_EXCLUDE,
    SourceError,
    SourceFile,
    discover,
    encode_source,
    read_source,
    write_source,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BOM = b"\xef\xbb\xbf"

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def make(path: Path, data: bytes | str = b"x = 1\n") -> Path:
    """Create ``path`` (and its parents) with ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def listing(directory: Path) -> list[str]:
    """Sorted names in ``directory`` (to detect stray temporary files)."""
    return sorted(os.listdir(directory))


def one_line(err: SourceError) -> str:
    """Return ``str(err)`` after checking it is a single line."""
    text = str(err)
    assert "\n" not in text and "\r" not in text
    return text


# ---------------------------------------------------------------------------
# read_source / encode_source round trips
# ---------------------------------------------------------------------------

ROUND_TRIP_CASES = {
    "ascii": (b"x = 1\ny = 2\n", "utf-8"),
    "utf8_non_ascii": ("s = 'h\u00e9llo \u2603'\n".encode(), "utf-8"),
    "bom": (BOM + "s = '\u00e9'\n".encode(), "utf-8-sig"),
    "bom_crlf": (BOM + b"a = 1\r\nb = 2\r\n", "utf-8-sig"),
    "bom_with_utf8_cookie": (BOM + b"# -*- coding: utf-8 -*-\nx = 1\n", "utf-8-sig"),
    "bom_only": (BOM, "utf-8-sig"),
    "double_bom": (BOM + BOM + b"x = 1\n", "utf-8-sig"),
    "latin1_cookie": (b"# -*- coding: latin-1 -*-\ns = '\xe9\xe8\xff'\n", "iso-8859-1"),
    "latin1_cookie_line2": (b"#!/usr/bin/env python\n# coding=latin-1\ns = '\xe9'\n", "iso-8859-1"),
    "cp1252_cookie": (b"# vim: set fileencoding=cp1252 :\ns = '\x80'\n", "cp1252"),
    "utf8_cookie_variant": (b"# coding: utf8\nx = '\xc3\xa9'\n", "utf8"),
    "crlf": (b"def f():\r\n    return 1\r\n", "utf-8"),
    "mixed_crlf_lf": (b"a = 1\r\nb = 2\nc = 3\r\n\nd = 4", "utf-8"),
    "cr_only": (b"a = 1\rb = 2\rc = 3\r", "utf-8"),
    "tabs": (b"if x:\n\ty = 1\n\tif y:\n\t\tz = '\t'\n", "utf-8"),
    "empty": (b"", "utf-8"),
    "no_trailing_newline": (b"x = 1\ny = 2", "utf-8"),
    "only_newlines": (b"\n\r\n\r", "utf-8"),
    "trailing_whitespace": (b"x = 1   \n   \n\t\n", "utf-8"),
    "form_feed": (b"\x0cx = 1\n\x0c\n", "utf-8"),
    "latin1_crlf_no_newline": (b"# coding: latin-1\r\ns = '\xe9'\r\nt = 1", "iso-8859-1"),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
def test_round_trip_is_exact(tmp_path: Path, name: str) -> None:
    raw, encoding = ROUND_TRIP_CASES[name]
    path = make(tmp_path / f"{name}.py", raw)
    source = read_source(str(path))
    assert source.raw == raw
    assert source.encoding == encoding
    assert encode_source(source, source.text) == raw
    assert isinstance(encode_source(source, source.text), bytes)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
def test_encoding_matches_tokenize_detect_encoding(tmp_path: Path, name: str) -> None:
    raw, _ = ROUND_TRIP_CASES[name]
    path = make(tmp_path / "m.py", raw)
    expected, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    assert read_source(str(path)).encoding == expected


def test_line_endings_are_kept_in_text(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"a = 1\r\nb = 2\rc = 3\n")
    assert read_source(str(path)).text == "a = 1\r\nb = 2\rc = 3\n"


def test_bom_is_removed_from_text(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", BOM + b"x = 1\n")
    source = read_source(str(path))
    assert source.text == "x = 1\n"
    assert not source.text.startswith("\ufeff")


def test_latin1_is_decoded_with_declared_codec(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    source = read_source(str(path))
    assert "s = '\u00e9'" in source.text


def test_coding_declaration_on_line_three_is_ignored(tmp_path: Path) -> None:
    raw = b"#!/usr/bin/env python\n# comment\n# coding: latin-1\ns = 'caf\xc3\xa9'\n"
    source = read_source(str(make(tmp_path / "m.py", raw)))
    assert source.encoding == "utf-8"
    assert "caf\u00e9" in source.text


def test_coding_declaration_after_code_line_is_ignored(tmp_path: Path) -> None:
    raw = b"x = 1\n# coding: latin-1\n"
    assert read_source(str(make(tmp_path / "m.py", raw))).encoding == "utf-8"


def test_source_file_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "pkg" / "m.py", b"x = 1\n")
    path.chmod(0o640)
    monkeypatch.chdir(tmp_path)
    source = read_source(os.path.join("pkg", "m.py"))
    st = os.stat(path)
    assert source.path == os.path.join("pkg", "m.py")
    assert source.real_path == os.path.realpath(path)
    assert source.stat_key == (st.st_mtime_ns, st.st_size, st.st_ino)
    assert source.mode == stat.S_IMODE(st.st_mode)
    if os.name == "posix":
        assert source.mode == 0o640


def test_source_file_is_frozen(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py")))
    with pytest.raises(AttributeError):
        source.text = "y = 2\n"  # type: ignore[misc]


def test_read_source_accepts_path_objects(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py")
    assert read_source(path).raw == b"x = 1\n"  # type: ignore[arg-type]


@needs_symlinks
def test_read_through_symlink_keeps_display_path(tmp_path: Path) -> None:
    target = make(tmp_path / "real" / "m.py")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    source = read_source(str(link))
    assert source.path == str(link)
    assert source.real_path == os.path.realpath(target)


# ---------------------------------------------------------------------------
# read_source errors
# ---------------------------------------------------------------------------


def read_error(path: str | Path) -> SourceError:
    """Return the SourceError that read_source raises for ``path``."""
    with pytest.raises(SourceError) as info:
        read_source(str(path))
    err = info.value
    assert err.path == str(path)
    text = one_line(err)
    assert text == f"{path}: {err.message}"
    return err


def test_missing_file(tmp_path: Path) -> None:
    err = read_error(tmp_path / "nope.py")
    assert err.message == "no such file or directory"


def test_missing_parent_directory(tmp_path: Path) -> None:
    err = read_error(tmp_path / "nodir" / "nope.py")
    assert "no such file or directory" in err.message


def test_directory_given_to_read_source(tmp_path: Path) -> None:
    (tmp_path / "pkg.py").mkdir()
    err = read_error(tmp_path / "pkg.py")
    assert "is a directory" in err.message


def test_path_through_a_file(tmp_path: Path) -> None:
    make(tmp_path / "m.py")
    err = read_error(tmp_path / "m.py" / "x.py")
    assert "Not a directory" in err.message or "not a directory" in err.message.lower()


@needs_symlinks
def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "dangling.py"
    link.symlink_to(tmp_path / "missing-target.py")
    err = read_error(link)
    assert "broken symbolic link" in err.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_is_rejected_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    err = read_error(fifo)
    assert "not a regular file" in err.message


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="root can read files without read permission")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = make(tmp_path / "secret.py")
    path.chmod(0o000)
    try:
        err = read_error(path)
    finally:
        path.chmod(0o600)
    assert "permission denied" in err.message.lower()


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs for every user, root included: the OS refusal is simulated.
    path = make(tmp_path / "secret.py")
    real_open = os.open

    def fake_open(target, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(target) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    err = read_error(path)
    assert err.message == "permission denied: Permission denied"


def test_read_io_error_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py")
    real_open = os.open

    def fake_open(target, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(target) == str(path):
            raise OSError(errno.EIO, "Input/output error", str(target))
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    err = read_error(path)
    assert "Input/output error" in err.message


def test_binary_file_named_py(tmp_path: Path) -> None:
    path = make(tmp_path / "image.py", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    err = read_error(path)
    assert err.message.startswith("binary file (contains NUL bytes")


def test_utf16_file_is_binary(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", "x = 1\n".encode("utf-16"))
    assert "binary file" in read_error(path).message


def test_invalid_utf8_reports_offset_and_suggests_declaration(tmp_path: Path) -> None:
    raw = b"x = 1\ns = 'caf\xe9'\n"
    err = read_error(make(tmp_path / "m.py", raw))
    assert "not valid UTF-8" in err.message
    assert raw.index(b"\xe9") == 14
    assert "byte offset 14 (line 2)" in err.message
    assert "0xe9" in err.message
    assert "coding declaration" in err.message


def test_invalid_utf8_on_first_line(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", b"# \xff comment\nx = 1\n"))
    assert "not valid UTF-8" in err.message
    assert "byte offset 2 (line 1)" in err.message


def test_invalid_utf8_on_second_line_after_comment(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", b"#!python\n# \xc3\x28\n"))
    assert "byte offset 11 (line 2)" in err.message


def test_invalid_utf8_after_bom_counts_the_bom(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", BOM + b"x = 1\ny = '\xff'\n"))
    assert "not valid UTF-8" in err.message
    assert "byte offset 14 (line 2)" in err.message


def test_unknown_codec_in_declaration(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", b"# -*- coding: klingon-9 -*-\nx = 1\n"))
    assert "unknown encoding 'klingon-9'" in err.message
    assert "line 1" in err.message


def test_unknown_codec_on_line_two(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", b"#!/usr/bin/python\n# coding: nope\n"))
    assert "unknown encoding 'nope'" in err.message
    assert "line 2" in err.message


def test_bom_with_non_utf8_declaration(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", BOM + b"# coding: latin-1\nx = 1\n"))
    assert "byte order mark" in err.message
    assert "'latin-1'" in err.message


def test_non_text_codec_is_rejected(tmp_path: Path) -> None:
    err = read_error(make(tmp_path / "m.py", b"# coding: rot13\nx = 1\n"))
    assert "not a text encoding" in err.message


def test_declared_codec_cannot_decode(tmp_path: Path) -> None:
    raw = b"# coding: ascii\ns = '\xe9'\n"
    err = read_error(make(tmp_path / "m.py", raw))
    assert "'ascii'" in err.message
    assert "byte offset 21 (line 2)" in err.message


def test_codec_that_cannot_round_trip_is_rejected(tmp_path: Path) -> None:
    # Decodes fine but encoding the text would add a UTF-16 byte order mark.
    raw = b"# coding: utf-16\n\n"
    with pytest.raises(SourceError) as info:
        read_source(str(make(tmp_path / "m.py", raw)))
    one_line(info.value)


@pytest.mark.parametrize("seed", range(8))
def test_arbitrary_bytes_give_source_file_or_source_error(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [b"\n", b"\r", b"\r\n", b"\t", b" ", b"x", b"#", b"coding:", b"latin-1",
                b"utf-8", b"bogus", b"\xe9", b"\xc3\xa9", b"\xff", b"\x00", BOM, b"=",
                b"rot13", b"ascii", b"utf-16"]
    accepted = 0
    for index in range(150):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            raw = b"# coding: " + rng.choice(alphabet) + b"\n" + raw
        path = make(tmp_path / f"f{index}.py", raw)
        try:
            source = read_source(str(path))
        except SourceError as err:
            one_line(err)
        else:
            accepted += 1
            assert encode_source(source, source.text) == raw
    assert accepted > 0


# ---------------------------------------------------------------------------
# SourceError
# ---------------------------------------------------------------------------


def test_source_error_str_and_attributes() -> None:
    err = SourceError("pkg/m.py", "something broke")
    assert str(err) == "pkg/m.py: something broke"
    assert err.path == "pkg/m.py"
    assert err.message == "something broke"
    assert isinstance(err, Exception)


def test_source_error_is_always_one_line() -> None:
    err = SourceError("we\nird.py", "first\nsecond\r\nthird")
    assert err.message == "first second  third"
    assert one_line(err).endswith(": first second  third")
    assert err.path == "we\nird.py"


def test_source_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(SourceError("a.py", "bad")))
    assert (err.path, err.message, str(err)) == ("a.py", "bad", "a.py: bad")


# ---------------------------------------------------------------------------
# encode_source
# ---------------------------------------------------------------------------


def test_encode_keeps_bom_for_new_text(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py", BOM + b"x = 1\n")))
    assert encode_source(source, "y = '\u00e9'\r\n") == BOM + "y = '\u00e9'\r\n".encode()


def test_encode_uses_declared_codec(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py", b"# coding: latin-1\n")))
    assert encode_source(source, "# coding: latin-1\ns = '\u00e9'\n") == (
        b"# coding: latin-1\ns = '\xe9'\n"
    )


def test_encode_does_not_translate_newlines(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py", b"")))
    assert encode_source(source, "a\r\nb\rc\n") == b"a\r\nb\rc\n"


def test_encode_unencodable_character(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py", b"# coding: latin-1\nx = 1\n")))
    with pytest.raises(SourceError) as info:
        encode_source(source, "# coding: latin-1\nx = 1\ns = '\u2603'\n")
    assert "iso-8859-1" in info.value.message
    assert "line 3" in info.value.message
    one_line(info.value)


def test_encode_lone_surrogate_in_utf8(tmp_path: Path) -> None:
    source = read_source(str(make(tmp_path / "m.py")))
    with pytest.raises(SourceError):
        encode_source(source, "s = '\ud800'\n")


# ---------------------------------------------------------------------------
# write_source
# ---------------------------------------------------------------------------


def test_write_replaces_content(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    write_source(read_source(str(path)), "x = 2\n")
    assert path.read_bytes() == b"x = 2\n"
    assert listing(tmp_path) == ["m.py"]


def test_write_preserves_encoding_bom_and_newlines(tmp_path: Path) -> None:
    latin = make(tmp_path / "latin.py", b"# coding: latin-1\r\nx = 1\r\n")
    source = read_source(str(latin))
    write_source(source, source.text + "s = '\u00e9'\r\n")
    assert latin.read_bytes() == b"# coding: latin-1\r\nx = 1\r\ns = '\xe9'\r\n"

    bom = make(tmp_path / "bom.py", BOM + b"x = 1\n")
    write_source(read_source(str(bom)), "x = 2\n")
    assert bom.read_bytes() == BOM + b"x = 2\n"


def test_write_same_text_round_trips(tmp_path: Path) -> None:
    raw = b"# coding: latin-1\r\ns = '\xe9'\rno_newline = 1"
    path = make(tmp_path / "m.py", raw)
    source = read_source(str(path))
    write_source(source, source.text)
    assert path.read_bytes() == raw


def test_write_then_reread_then_write_again(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    write_source(read_source(str(path)), "x = 2\n")
    write_source(read_source(str(path)), "x = 3\n")
    assert path.read_bytes() == b"x = 3\n"


def test_second_write_with_stale_source_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    write_source(source, "x = 2\n")
    with pytest.raises(SourceError) as info:
        write_source(source, "x = 3\n")
    assert "changed on disk since it was read; not overwritten" in info.value.message
    assert path.read_bytes() == b"x = 2\n"


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o755, 0o700])
def test_write_preserves_permission_bits(tmp_path: Path, mode: int) -> None:
    path = make(tmp_path / "m.py")
    path.chmod(mode)
    write_source(read_source(str(path)), "y = 2\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert path.read_bytes() == b"y = 2\n"


@posix_only
@pytest.mark.skipif(not IS_ROOT, reason="needs root to chown")
def test_write_preserves_owner_when_possible(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py")
    os.chown(path, 12345, 12346)
    write_source(read_source(str(path)), "y = 2\n")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 12346)


@needs_symlinks
def test_write_through_symlink_keeps_the_link(tmp_path: Path) -> None:
    target = make(tmp_path / "real" / "m.py", b"x = 1\n")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    source = read_source(str(link))
    write_source(source, "x = 2\n")
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_bytes() == b"x = 2\n"
    assert listing(tmp_path) == ["link.py", "real"]
    assert listing(target.parent) == ["m.py"]


@needs_symlinks
def test_write_through_relative_symlink_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = make(tmp_path / "a" / "m.py", b"x = 1\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "hop.py").symlink_to(os.path.join("..", "a", "m.py"))
    (tmp_path / "top.py").symlink_to(os.path.join("b", "hop.py"))
    monkeypatch.chdir(tmp_path)
    write_source(read_source("top.py"), "x = 2\n")
    assert os.path.islink("top.py") and os.path.islink(os.path.join("b", "hop.py"))
    assert target.read_bytes() == b"x = 2\n"


def test_write_refuses_file_changed_with_same_stat(tmp_path: Path) -> None:
    # Same size, same mtime, same inode: only the byte comparison can notice.
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"x = 9\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert files._stat_key(os.stat(path)) == source.stat_key
    with pytest.raises(SourceError) as info:
        write_source(source, "x = 2\n")
    assert info.value.message == "changed on disk since it was read; not overwritten"
    assert path.read_bytes() == b"x = 9\n"
    assert listing(tmp_path) == ["m.py"]


def test_write_refuses_file_with_new_mtime(tmp_path: Path) -> None:
    # Same bytes but touched: the stat key differs, so the write is refused.
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(SourceError, match="changed on disk since it was read"):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"


def test_write_refuses_file_that_grew(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    with open(path, "ab") as handle:
        handle.write(b"y = 2\n")
    with pytest.raises(SourceError, match="changed on disk"):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\ny = 2\n"


def test_write_refuses_file_replaced_by_another(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    other = make(tmp_path / "other", b"x = 1\n")
    os.replace(other, path)
    with pytest.raises(SourceError, match="changed on disk"):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"


def test_write_refuses_deleted_file(tmp_path: Path) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    path.unlink()
    with pytest.raises(SourceError, match="no longer exists"):
        write_source(source, "x = 2\n")
    assert listing(tmp_path) == []


def test_write_refuses_change_made_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is modified after the temporary file was written but before
    # the replacement: the last check must catch it.
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    real_chmod = os.chmod

    def chmod_then_edit(target, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_chmod(target, mode, *args, **kwargs)
        path.write_bytes(b"edited = True\n")

    monkeypatch.setattr(os, "chmod", chmod_then_edit)
    with pytest.raises(SourceError, match="changed on disk"):
        write_source(source, "x = 2\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"edited = True\n"
    assert listing(tmp_path) == ["m.py"]


@posix_only
def test_write_refuses_read_only_file(tmp_path: Path) -> None:
    # Runs as root too: a file without any write bit is never replaced.
    path = make(tmp_path / "m.py", b"x = 1\n")
    path.chmod(0o444)
    source = read_source(str(path))
    with pytest.raises(SourceError) as info:
        write_source(source, "x = 2\n")
    assert "read-only" in info.value.message
    assert "not overwritten" in info.value.message
    one_line(info.value)
    assert path.read_bytes() == b"x = 1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert listing(tmp_path) == ["m.py"]


def test_write_refuses_file_without_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(SourceError, match="read-only"):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="root can create files in read-only directories")
def test_write_into_read_only_directory_real(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    path = make(directory / "m.py", b"x = 1\n")
    source = read_source(str(path))
    directory.chmod(0o555)
    try:
        with pytest.raises(SourceError) as info:
            write_source(source, "x = 2\n")
    finally:
        directory.chmod(0o755)
    assert "read-only directory" in info.value.message
    assert path.read_bytes() == b"x = 1\n"
    assert listing(directory) == ["m.py"]


def test_write_into_read_only_directory_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(tmp_path / "pkg" / "m.py", b"x = 1\n")
    source = read_source(str(path))

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SourceError) as info:
        write_source(source, "x = 2\n")
    message = one_line(info.value)
    assert "read-only directory" in message
    assert "Permission denied" in message
    assert "not overwritten" in message
    assert path.read_bytes() == b"x = 1\n"
    assert listing(path.parent) == ["m.py"]


def test_replace_permission_error_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))

    def refuse(src, dst):  # type: ignore[no-untyped-def]
        assert os.path.exists(src)  # the temporary file was really written
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SourceError) as info:
        write_source(source, "x = 2\n")
    assert "Permission denied" in info.value.message
    assert "not overwritten" in info.value.message
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_replace_os_error_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))
    seen: list[str] = []

    def fail(src, dst):  # type: ignore[no-untyped-def]
        seen.append(src)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SourceError, match="Input/output error"):
        write_source(source, "x = 2\n")
    assert seen and os.path.dirname(seen[0]) == str(tmp_path)
    assert not os.path.exists(seen[0])
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_replace_keyboard_interrupt_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))

    def interrupt(src, dst):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_fsync_interrupt_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))

    def interrupt(fd):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_disk_full_while_writing_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"x = 1\n")
    source = read_source(str(path))

    def full(fd):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SourceError, match="No space left on device"):
        write_source(source, "x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_unencodable_text_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make(tmp_path / "m.py", b"# coding: latin-1\nx = 1\n")
    source = read_source(str(path))
    calls: list[object] = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        raise AssertionError("no temporary file may be created")

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    with pytest.raises(SourceError) as info:
        write_source(source, "# coding: latin-1\ns = '\u2603'\n")
    assert "cannot encode" in info.value.message
    assert calls == []
    assert path.read_bytes() == b"# coding: latin-1\nx = 1\n"
    assert listing(tmp_path) == ["m.py"]


def test_temp_file_is_created_next_to_the_real_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make(tmp_path / "real" / "m.py", b"x = 1\n")
    display = target
    if hasattr(os, "symlink"):
        display = tmp_path / "link.py"
        display.symlink_to(target)
    source = read_source(str(display))
    dirs: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        dirs.append(kwargs["dir"])
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    write_source(source, "x = 2\n")
    assert dirs == [os.path.dirname(os.path.realpath(target))]


# ---------------------------------------------------------------------------
# discover
# ---------------------------------------------------------------------------


def rel(paths: list[str], base: Path) -> list[str]:
    """Paths relative to ``base`` in POSIX form, for readable assertions."""
    return [Path(os.path.relpath(p, base)).as_posix() for p in paths]


def test_default_exclude_contents() -> None:
    assert DEFAULT_EXCLUDE == (
        ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "__pycache__",
        ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist",
        "node_modules", ".eggs", "*.egg-info",
    )


def test_walk_is_recursive_sorted_and_py_only(tmp_path: Path) -> None:
    for name in ["b.py", "a.py", "c/z.py", "c/d/e.py", "c/a.py", "notes.txt",
                 "script", "mod.pyi", "x.py.bak", "B.py", "aa/a.py"]:
        make(tmp_path / name)
    found, errors = discover([str(tmp_path)])
    assert errors == []
    assert rel(found, tmp_path) == ["B.py", "a.py", "aa/a.py", "b.py", "c/a.py", "c/d/e.py", "c/z.py"]


def test_discover_is_deterministic(tmp_path: Path) -> None:
    for index in range(30):
        make(tmp_path / f"d{index % 4}" / f"m{index}.py")
    first = discover([str(tmp_path)])
    assert first[0] == discover([str(tmp_path)])[0]
    assert len(first[0]) == 30


def test_explicit_file_included_regardless_of_suffix_and_exclusion(tmp_path: Path) -> None:
    script = make(tmp_path / "build" / "tool")
    text = make(tmp_path / "notes.txt")
    generated = make(tmp_path / "gen.py")
    found, errors = discover([str(script), str(text), str(generated)],
                             extend_exclude=["gen.py", "*.txt"])
    assert errors == []
    assert found == [str(script), str(text), str(generated)]


@pytest.mark.parametrize("name", [*(n for n in DEFAULT_EXCLUDE if "*" not in n), "pkg.egg-info"])
def test_default_excluded_directories(tmp_path: Path, name: str) -> None:
    make(tmp_path / name / "hidden.py")
    make(tmp_path / "sub" / name / "deep" / "hidden.py")
    make(tmp_path / "keep.py")
    found, errors = discover([str(tmp_path)])
    assert errors == []
    assert rel(found, tmp_path) == ["keep.py"]


def test_similar_names_are_not_excluded(tmp_path: Path) -> None:
    for name in ["builder/a.py", "distro/a.py", "venvs/a.py", "git/a.py", "build.py", "egg-info/a.py"]:
        make(tmp_path / name)
    found, _ = discover([str(tmp_path)])
    assert rel(found, tmp_path) == ["build.py", "builder/a.py", "distro/a.py", "egg-info/a.py",
                                    "git/a.py", "venvs/a.py"]


def test_exclude_replaces_default(tmp_path: Path) -> None:
    make(tmp_path / ".venv" / "a.py")
    make(tmp_path / "tests" / "t.py")
    make(tmp_path / "m.py")
    found, _ = discover([str(tmp_path)], exclude=["tests"])
    assert rel(found, tmp_path) == [".venv/a.py", "m.py"]


def test_extend_exclude_adds_to_default(tmp_path: Path) -> None:
    make(tmp_path / ".venv" / "a.py")
    make(tmp_path / "tests" / "t.py")
    make(tmp_path / "m.py")
    found, _ = discover([str(tmp_path)], extend_exclude=["tests"])
    assert rel(found, tmp_path) == ["m.py"]


def test_extend_exclude_adds_to_given_exclude(tmp_path: Path) -> None:
    make(tmp_path / ".venv" / "a.py")
    make(tmp_path / "tests" / "t.py")
    make(tmp_path / "docs" / "conf.py")
    make(tmp_path / "m.py")
    found, _ = discover([str(tmp_path)], exclude=["tests"], extend_exclude=["docs"])
    assert rel(found, tmp_path) == [".venv/a.py", "m.py"]


def test_component_pattern_matches_at_any_depth(tmp_path: Path) -> None:
    make(tmp_path / "a" / "b" / "tests" / "t.py")
    make(tmp_path / "a" / "b" / "m.py")
    make(tmp_path / "tests_extra" / "x.py")
    found, _ = discover([str(tmp_path)], extend_exclude=["tests"])
    assert rel(found, tmp_path) == ["a/b/m.py", "tests_extra/x.py"]


def test_file_name_pattern(tmp_path: Path) -> None:
    make(tmp_path / "conftest.py")
    make(tmp_path / "pkg" / "conftest.py")
    make(tmp_path / "pkg" / "m_pb2.py")
    make(tmp_path / "pkg" / "m.py")
    found, _ = discover([str(tmp_path)], extend_exclude=["conftest.py", "*_pb2.py"])
    assert rel(found, tmp_path) == ["pkg/m.py"]


def test_relative_path_pattern_against_given_directory(tmp_path: Path) -> None:
    make(tmp_path / "pkg" / "generated" / "g.py")
    make(tmp_path / "pkg" / "generated" / "sub" / "s.py")
    make(tmp_path / "pkg" / "m.py")
    make(tmp_path / "other" / "generated" / "g.py")
    found, _ = discover([str(tmp_path)], extend_exclude=["pkg/generated/*.py"])
    # '*' also matches '/', as in fnmatch.
    assert rel(found, tmp_path) == ["other/generated/g.py", "pkg/m.py"]


def test_relative_path_pattern_for_directory(tmp_path: Path) -> None:
    make(tmp_path / "pkg" / "generated" / "g.py")
    make(tmp_path / "pkg" / "m.py")
    make(tmp_path / "generated" / "top.py")
    found, _ = discover([str(tmp_path)], extend_exclude=["pkg/generated/"])
    assert rel(found, tmp_path) == ["generated/top.py", "pkg/m.py"]


def test_relative_pattern_anchored_at_root(tmp_path: Path) -> None:
    make(tmp_path / "pkg" / "generated" / "g.py")
    make(tmp_path / "pkg" / "m.py")
    walked = tmp_path / "pkg"
    # Relative to the walked directory the path is 'generated/g.py' ...
    found, _ = discover([str(walked)], extend_exclude=["pkg/generated/*.py"])
    assert rel(found, tmp_path) == ["pkg/generated/g.py", "pkg/m.py"]
    # ... but relative to the root it is 'pkg/generated/g.py'.
    found, _ = discover([str(walked)], extend_exclude=["pkg/generated/*.py"], root=str(tmp_path))
    assert rel(found, tmp_path) == ["pkg/m.py"]
    found, _ = discover([str(walked)], extend_exclude=["./pkg/generated"], root=str(tmp_path))
    assert rel(found, tmp_path) == ["pkg/m.py"]


def test_root_with_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "src" / "pkg" / "generated" / "g.py")
    make(tmp_path / "src" / "pkg" / "m.py")
    monkeypatch.chdir(tmp_path / "src")
    found, _ = discover(["pkg"], extend_exclude=["src/pkg/generated"], root="..")
    assert found == [os.path.join("pkg", "m.py")]


def test_directory_outside_root_uses_its_own_relative_paths(tmp_path: Path) -> None:
    make(tmp_path / "outside" / "gen" / "g.py")
    make(tmp_path / "outside" / "m.py")
    (tmp_path / "root").mkdir()
    found, _ = discover([str(tmp_path / "outside")], extend_exclude=["gen/*"],
                        root=str(tmp_path / "root"))
    assert rel(found, tmp_path) == ["outside/m.py"]


def test_explicitly_named_excluded_directory_is_walked(tmp_path: Path) -> None:
    make(tmp_path / "build" / "b.py")
    make(tmp_path / "build" / "__pycache__" / "c.py")
    found, _ = discover([str(tmp_path / "build")])
    assert rel(found, tmp_path) == ["build/b.py"]


def test_missing_path_is_reported_and_others_processed(tmp_path: Path) -> None:
    make(tmp_path / "a.py")
    make(tmp_path / "d" / "b.py")
    missing = str(tmp_path / "missing.py")
    found, errors = discover([str(tmp_path / "a.py"), missing, str(tmp_path / "d")])
    assert rel(found, tmp_path) == ["a.py", "d/b.py"]
    assert len(errors) == 1
    assert isinstance(errors[0], SourceError)
    assert errors[0].path == missing
    assert str(errors[0]) == f"{missing}: no such file or directory"


@needs_symlinks
def test_broken_symlink_given_explicitly_is_an_error(tmp_path: Path) -> None:
    link = tmp_path / "dangling.py"
    link.symlink_to(tmp_path / "nowhere.py")
    found, errors = discover([str(link)])
    assert found == []
    assert [e.path for e in errors] == [str(link)]
    assert "broken symbolic link" in errors[0].message


def test_order_follows_given_paths(tmp_path: Path) -> None:
    make(tmp_path / "b" / "z.py")
    make(tmp_path / "b" / "a.py")
    make(tmp_path / "a" / "m.py")
    single = make(tmp_path / "single.py")
    found, _ = discover([str(tmp_path / "b"), str(single), str(tmp_path / "a")])
    assert rel(found, tmp_path) == ["b/a.py", "b/z.py", "single.py", "a/m.py"]


def test_duplicates_are_removed_keeping_first(tmp_path: Path) -> None:
    make(tmp_path / "d" / "a.py")
    make(tmp_path / "d" / "b.py")
    found, errors = discover([str(tmp_path / "d" / "b.py"), str(tmp_path / "d"),
                              str(tmp_path / "d"), str(tmp_path / "d" / "a.py")])
    assert errors == []
    assert rel(found, tmp_path) == ["d/b.py", "d/a.py"]


def test_duplicates_by_different_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "d" / "a.py")
    monkeypatch.chdir(tmp_path)
    found, _ = discover([os.path.join("d", "a.py"), os.path.join(".", "d", "a.py"),
                         str(tmp_path / "d" / "a.py"), "d"])
    assert found == [os.path.join("d", "a.py")]


def test_output_paths_keep_the_given_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "src" / "pkg" / "a.py")
    monkeypatch.chdir(tmp_path)
    assert discover(["src"])[0] == [os.path.join("src", "pkg", "a.py")]
    assert discover(["src" + os.sep])[0] == [os.path.join("src", "pkg", "a.py")]
    monkeypatch.chdir(tmp_path / "src")
    assert discover(["."])[0] == [os.path.join(".", "pkg", "a.py")]
    assert discover([os.path.join("..", "src")])[0] == [os.path.join("..", "src", "pkg", "a.py")]


@needs_symlinks
def test_directory_symlinks_are_not_followed_while_walking(tmp_path: Path) -> None:
    make(tmp_path / "outside" / "o.py")
    project = tmp_path / "project"
    make(project / "m.py")
    (project / "linked_dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (project / "loop").symlink_to(project, target_is_directory=True)
    found, errors = discover([str(project)])
    assert errors == []
    assert rel(found, tmp_path) == ["project/m.py"]


@needs_symlinks
def test_explicit_directory_symlink_is_walked_without_resolving(tmp_path: Path) -> None:
    make(tmp_path / "real" / "a.py")
    link = tmp_path / "alias"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    found, _ = discover([str(link)])
    assert found == [os.path.join(str(link), "a.py")]


@needs_symlinks
def test_file_symlinks_are_included_broken_ones_skipped(tmp_path: Path) -> None:
    make(tmp_path / "lib" / "real.py")
    project = tmp_path / "project"
    make(project / "m.py")
    (project / "alias.py").symlink_to(tmp_path / "lib" / "real.py")
    (project / "broken.py").symlink_to(tmp_path / "nowhere.py")
    (project / "self_link.py").symlink_to(project / "self_link.py")
    found, errors = discover([str(project)])
    assert errors == []
    assert rel(found, tmp_path) == ["project/alias.py", "project/m.py"]


@needs_symlinks
def test_symlink_to_file_in_same_walk_is_deduplicated(tmp_path: Path) -> None:
    make(tmp_path / "b_real.py")
    (tmp_path / "a_link.py").symlink_to(tmp_path / "b_real.py")
    found, _ = discover([str(tmp_path)])
    assert rel(found, tmp_path) == ["a_link.py"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_special_files_are_skipped_while_walking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.py")
    make(tmp_path / "m.py")
    found, errors = discover([str(tmp_path)])
    assert errors == []
    assert rel(found, tmp_path) == ["m.py"]


def test_directory_named_like_py_file_is_walked(tmp_path: Path) -> None:
    make(tmp_path / "weird.py" / "inner.py")
    found, _ = discover([str(tmp_path)])
    assert rel(found, tmp_path) == ["weird.py/inner.py"]


@posix_only
@pytest.mark.skipif(IS_ROOT, reason="root can list directories without permission")
def test_unlistable_directory_real(tmp_path: Path) -> None:
    make(tmp_path / "a.py")
    locked = tmp_path / "locked"
    make(locked / "hidden.py")
    make(tmp_path / "z.py")
    locked.chmod(0o000)
    try:
        found, errors = discover([str(tmp_path)])
    finally:
        locked.chmod(0o755)
    assert rel(found, tmp_path) == ["a.py", "z.py"]
    assert [e.path for e in errors] == [str(locked)]


def test_unlistable_directory_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "a.py")
    locked = tmp_path / "locked"
    make(locked / "hidden.py")
    make(tmp_path / "z.py")
    real_scandir = os.scandir

    def fake_scandir(path):  # type: ignore[no-untyped-def]
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    found, errors = discover([str(tmp_path)])
    assert rel(found, tmp_path) == ["a.py", "z.py"]
    assert len(errors) == 1
    assert str(errors[0]) == f"{locked}: cannot list directory: Permission denied"


def test_empty_inputs(tmp_path: Path) -> None:
    assert discover([]) == ([], [])
    assert discover([str(tmp_path)]) == ([], [])


def test_discover_results_are_readable(tmp_path: Path) -> None:
    make(tmp_path / "pkg" / "a.py", BOM + b"x = 1\r\n")
    make(tmp_path / "pkg" / "b.py", b"# coding: latin-1\ns = '\xe9'")
    found, errors = discover([str(tmp_path)])
    assert errors == []
    for path in found:
        source = read_source(path)
        assert source.path == path
        assert encode_source(source, source.text) == source.raw


# ---------------------------------------------------------------------------
# module hygiene
# ---------------------------------------------------------------------------


def test_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(files.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "the import scan found nothing"
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    if stdlib - {"__future__"}:
        assert imported <= stdlib, imported - stdlib
    assert not imported & {"jax", "torch", "libcst", "loop2scan"}


def test_module_loads_without_heavy_dependencies() -> None:
    # Load the file on its own (not through the package) in a fresh interpreter.
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('l2s_files', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "bad = [m for m in ('jax', 'torch', 'libcst') if m in sys.modules]\n"
        "print(','.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, files.__file__],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names() -> None:
    assert set(files.__all__) == {"DEFAULT_EXCLUDE", "DEFAULT_TEST_FILES", "SourceError", "SourceFile", "discover",
                                  "encode_source", "read_source", "write_source"}
    assert SourceFile.__dataclass_params__.frozen  # type: ignore[attr-defined]
