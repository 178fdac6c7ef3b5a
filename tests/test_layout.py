"""The package's architecture holds: no import circles, no import up the layer order,
no unexplained function-local import, no dimension named outside spaces/
(scripts/layout.py reads all of it from the code)."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import spaces
from tests.conftest import ROOT, fresh_imports

spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout)


def test_the_layout_check_passes_on_this_checkout():
    result = subprocess.run([sys.executable, "scripts/layout.py", "--check", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import circles: 0" in result.stdout
    assert "upward imports (against core < tasks < trial < results < driver < cli/api): 0" in result.stdout
    assert "lines outside spaces/ naming a dimension: 0 " in result.stdout


def test_the_check_finds_a_circle_an_upward_import_and_a_dimension():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert layout.circles(edges) == [["a", "b", "c"]]
    found = [("search.core.spec", "search.driver.tell", False, 3, "from search.driver import tell")]
    assert layout.upward(found) == [("search.core.spec", "search.driver.tell", 3)]
    assert layout.DIMENSION_PATTERN.search("is quantized") and not layout.DIMENSION_PATTERN.search("scheduler")


def test_every_built_in_dimension_is_a_word_the_check_looks_for():
    names = {d.name for d in spaces.builtins()} - {"model"}  # "model" is every stage's word
    assert names <= set(layout.DIMENSION_WORDS), names - set(layout.DIMENSION_WORDS)


def test_each_sub_package_says_what_it_owns_and_may_import():
    for name in layout.LAYERS:
        init = Path(ROOT / "search" / name / "__init__.py")
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import:" in doc, f"search/{name}/__init__.py"


def test_reading_a_spec_and_a_stored_front_needs_no_torch():
    # What `paretune status/front/export` import, and a spec read and sampled through
    # every dimension: torch is imported on first use only (spaces._lazy).
    code = (
        "import optuna, spaces\n"
        "from search.core.spec import load\n"
        "from search.results import exporter, front_table, pareto\n"
        "from search.tasks.plugins import suggest_params\n"
        "spec = load('studies/digits.toml')\n"
        "trial = optuna.create_study(directions=['maximize']).ask()\n"
        "params = suggest_params(trial, spec, 'image')\n"
        "assert len(params) >= 8, params\n"
    )
    assert fresh_imports(code, ("torch", "torch_pruning", "onnx", "sklearn")) == []
