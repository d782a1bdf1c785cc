"""pyproject.toml: every console command points at a function that exists and runs without arguments, every package
and package-data file it names is there, and the benchmarks index names every benchmark script. No install needed."""

import importlib
import inspect
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = PYPROJECT["project"]["scripts"]


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_entry_point_is_a_function_taking_no_arguments(command):
    module_name, _, function_name = SCRIPTS[command].partition(":")
    function = getattr(importlib.import_module(module_name), function_name, None)
    assert callable(function), f"{command} = {SCRIPTS[command]!r}: no function {function_name} in {module_name}"
    inspect.signature(function).bind()  # the console script calls it as sys.exit(main())


def test_commands_are_named_occmllm_verb():
    assert all(name.startswith("occmllm-") for name in SCRIPTS)
    assert {"occmllm-studio", "occmllm-infer", "occmllm-evaluate", "occmllm-train", "occmllm-synth",
            "occmllm-export", "occmllm-validate", "occmllm-convert"} <= set(SCRIPTS)


def test_every_top_level_package_is_packaged_with_its_data():
    setuptools = PYPROJECT["tool"]["setuptools"]
    included = set(setuptools["packages"]["find"]["include"])
    for package in ("occmllm", "demo", "train", "data_tools", "benchmarks"):
        assert (REPO / package / "__init__.py").is_file()
        assert {package, f"{package}.*"} <= included
    for package, patterns in setuptools["package-data"].items():
        folder = REPO / package.replace(".", "/")
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"package data {package}: {pattern} matches no file"


def test_dependencies_come_from_the_requirements_files():
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    files = dynamic["dependencies"]["file"] + dynamic["optional-dependencies"]["dev"]["file"]
    assert all((REPO / name).is_file() for name in files)


def test_benchmarks_index_names_every_benchmark_script():
    from benchmarks.__main__ import read_index

    listed = {row["script"] for row in read_index()}
    scripts = {p.name for p in (REPO / "benchmarks").iterdir()
               if p.suffix in (".py", ".sh") and not p.name.startswith("__")}
    assert listed == scripts
