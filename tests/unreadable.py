"""A file that cannot be read, also where the tests run as root (who may read
anything): opening exactly that file for reading fails with EACCES.

Run as a script, ``python tests/unreadable.py FILE ARGS...`` runs
``loop2scan ARGS...`` in a fresh interpreter with FILE unreadable there and in
the worker processes it forks (no multithreaded framework is loaded, so the
workers are forked and inherit the patch)."""

from __future__ import annotations

import errno
import os


def refuse_reading(path):
    """An ``os.open`` that refuses to open ``path`` for reading."""
    target = os.path.abspath(path)
    real_open = os.open

    def fake_open(p, flags, *args, **kwargs):
        if isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)) == target \
                and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(p))
        return real_open(p, flags, *args, **kwargs)

    return fake_open


if __name__ == "__main__":
    import sys

    os.open = refuse_reading(sys.argv[1])
    from loop2scan.cli import main

    main(sys.argv[2:], prog_name="loop2scan")
