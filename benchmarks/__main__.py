"""The benchmarks: `python -m benchmarks` lists them, `python -m benchmarks NAME [ARGS...]` runs one.

    python -m benchmarks                          # one line each: name, where it runs, what it measures
    python -m benchmarks bench_cot --runs 50      # = python -m benchmarks.bench_cot --runs 50
    python -m benchmarks gpu_recon --help         # the shell script: = bash benchmarks/gpu_recon.sh --help
    make bench ARGS="bench_cot --help"

The list is the index table of benchmarks/README.md (one row per script, written once there).
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX = HERE / "README.md"


def read_index() -> list[dict[str, str]]:
    """The rows of the index table in README.md: name, script file, what it measures, where it runs."""
    rows = []
    for line in INDEX.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| [`"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name, script = cells[0].split("`")[1], cells[0].split("](")[1].rstrip(")")
        rows.append({"name": name, "script": script, "measures": cells[1].replace("`", ""),
                     "where": cells[-1].replace("`", "")})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = read_index()
    if not argv or argv[0] in ("-h", "--help", "list"):
        name_width, where_width = (max(len(row[key]) for row in rows) for key in ("name", "where"))
        print(__doc__.split("\n")[0] + "\n")
        for row in rows:
            print(f"  {row['name']:<{name_width}}  {row['where']:<{where_width}}  {row['measures']}")
        print("\nDetails (command, what each prints): benchmarks/README.md; each one's --help.")
        return 0
    name, args = argv[0].removesuffix(".py").removesuffix(".sh"), argv[1:]
    row = next((row for row in rows if row["name"] in (name, f"bench_{name}")), None)
    if row is None:
        print(f"python -m benchmarks: no benchmark named {name!r}; these exist: "
              + ", ".join(row["name"] for row in rows), file=sys.stderr)
        return 2
    if row["script"].endswith(".sh"):
        return subprocess.call(["bash", str(HERE / row["script"]), *args])
    sys.argv = [row["script"], *args]  # the script's own sys.exit(...) ends the process with its code
    runpy.run_module(f"benchmarks.{row['name']}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
