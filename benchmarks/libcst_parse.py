"""Baseline for the throughput benchmark: read and parse files with libcst.

    python benchmarks/libcst_parse.py --jobs N --files-from LIST

LIST holds one path a line.  Each file is read (bytes) and parsed with
``libcst.parse_module`` in a ``multiprocessing.Pool(N)``; the biggest files are
handed out first (as loop2scan does) so that the workers finish together.
Prints one JSON line: files, parsed, failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os


def _parse(path: str) -> bool:
    import libcst

    with open(path, "rb") as f:
        data = f.read()
    try:
        libcst.parse_module(data)
    except Exception:  # noqa: BLE001 - counted, not fatal
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, required=True)
    ap.add_argument("--files-from", required=True)
    args = ap.parse_args()
    with open(args.files_from, encoding="utf-8") as f:
        files = [line.rstrip("\n") for line in f if line.strip()]
    files.sort(key=lambda p: -os.path.getsize(p))
    import libcst  # noqa: F401 - imported once in the parent; forked workers inherit it

    with multiprocessing.Pool(args.jobs) as pool:
        ok = list(pool.imap_unordered(_parse, files, chunksize=1))
    print(json.dumps({"files": len(files), "parsed": sum(ok), "failed": len(ok) - sum(ok)}))


if __name__ == "__main__":
    main()
