"""The command line of occmllm.validate (its docstring is this command's --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from occmllm import validate as library
from occmllm.validate import FORMATS, validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.validate", description=library.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="JSONL or JSON files to check")
    parser.add_argument("--format", choices=FORMATS, help="the format of every file (default: recognised per file)")
    parser.add_argument("--images-root", type=Path, help="folder the 'image' paths are relative to; images are "
                        "checked for existence (default: the root in a meta.json beside the file, else not checked)")
    parser.add_argument("--classes", help="comma-separated class names allowed in answers (default: the 8 ObMan "
                        "classes)")
    parser.add_argument("--max-errors", type=int, default=200, help="print at most this many problems (default 200)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no warnings, no summary")
    args = parser.parse_args(argv)
    if args.images_root and not args.images_root.is_dir():
        parser.error(f"--images-root {args.images_root} is not a folder")
    classes = {c.strip() for c in args.classes.split(",")} if args.classes else None
    report = validate(args.files, args.format, args.images_root, classes)
    for message in report.errors[: args.max_errors]:
        print(message)
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more problems")
    if not args.quiet:
        for message in report.warnings[: args.max_errors]:
            print(message, file=sys.stderr)
        total = sum(report.records.values())
        verdict = f"{len(report.errors)} problem(s)" if report.errors else "ok"
        print(f"{verdict}: {total} records in {len(args.files)} file(s)", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
