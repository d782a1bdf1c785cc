"""The shape of the code, for refactoring notes: which top-level package imports which (every import statement,
inside functions too, as tests/test_layering.py reads them) and the longest functions.

    python -m benchmarks.code_shape [--top 12]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_layering import TOP, imports  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.code_shape", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=12, help="how many of the longest functions to print")
    args = parser.parse_args(argv)
    edges, lengths = defaultdict(set), []
    for top in TOP:
        for path in sorted((REPO / top).rglob("*.py")):
            edges[top] |= {name.split(".")[0] for _, name in imports(path)} - {top}
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(REPO)}:{node.lineno} {node.name}"))
    print("imports between the top-level packages:")
    for top in TOP:
        print(f"  {top} -> {', '.join(sorted(edges[top])) or '(third-party only)'}")
    print(f"longest functions (lines, in {', '.join(TOP)}):")
    for n, where in sorted(lengths, reverse=True)[: args.top]:
        print(f"  {n:4d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
