"""The command line of occmllm.export (its docstring is this command's --help)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from occmllm import export as library
from occmllm.export import export
from occmllm.store import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.export", description=library.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="the app's data folder, or its annotations.sqlite")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; files in it are replaced)")
    parser.add_argument("--zip", type=Path, help="also pack the output folder into this zip file")
    args = parser.parse_args(argv)
    try:
        summary = export(args.db, args.out)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.zip:
        args.zip.parent.mkdir(parents=True, exist_ok=True)
        shutil.make_archive(str(args.zip.with_suffix("")), "zip", args.out)
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
