"""The layering of ../shared/DESIGN.md, checked on every import statement (module level and inside functions):
occmllm imports none of the folders above it; train, demo and data_tools import occmllm and their own modules only;
no two occmllm modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = ("occmllm", "train", "demo", "data_tools")
PROJECT = (*TOP, "tests", "benchmarks")  # what an import may name; tests and benchmarks are never imported by the rest
MAY_IMPORT = {"occmllm": {"occmllm"}, "train": {"train", "occmllm"}, "demo": {"demo", "occmllm"},
              "data_tools": {"data_tools", "occmllm"}}


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file that names one of the project's packages."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name.split(".")[0] in PROJECT]


def test_each_folder_imports_only_what_design_allows():
    wrong = []
    for top in TOP:
        for path in sorted((REPO / top).rglob("*.py")):
            for line, name in imports(path):
                if name.split(".")[0] not in MAY_IMPORT[top]:
                    wrong.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_two_library_modules_import_each_other():
    graph = {}
    for path in (REPO / "occmllm").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {name for _, name in imports(path)}

    def owner(name: str) -> str | None:  # "occmllm.recon.LearnedExpert" -> "occmllm.recon"
        while name and name not in graph:
            name = name.rpartition(".")[0]
        return name or None

    edges = {a: {owner(n) for n in names} - {None, a} for a, names in graph.items()}
    circles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets
                      if a in edges.get(b, ()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert not circles, circles


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    (tmp_path / "occmllm" / "recon").mkdir(parents=True)
    probe = tmp_path / "occmllm" / "recon" / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from data_tools.export import main\n    from ..synth import writer\n")
    assert imports(probe, tmp_path) == [(4, "data_tools.export"), (5, "occmllm.synth")]
