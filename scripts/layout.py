"""The package's architecture, read from its code: `python scripts/layout.py`.

Prints
- each sub-package of search/ with its modules and lines, and the first line of its
  `__init__` docstring (what it owns);
- the import graph's circles (every project import counts, top-level or inside a
  function) and the imports that go up the layer order the sub-packages declare;
- the function-local imports of project modules, and any without a `# deferred:`
  comment saying which heavy dependency it defers;
- every line outside spaces/ that names a built-in dimension or one of its modes;
- the path of the study spec from `launch` to a trial: every project function the
  spec is handed to (as an argument, or beside a function it is handed with, as in
  `tune.with_parameters(trainable, spec=spec)`), the modules they are in, and the
  calls that climb from a lower layer back up to a higher one.

`--check` exits 1 when there is a circle, an upward import, an unexplained local
import or a dimension named outside spaces/ (tests/test_layout.py runs it).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search", "spaces", "objectives")
# The layer order of search/'s sub-packages: a module may import its own layer and
# those before it (each __init__ docstring says the same in words).
LAYERS = ("core", "tasks", "trial", "results", "driver")
TOP = "search"  # cli.py, api.py: may import every layer

# What names a dimension: a built-in dimension's name, or a word only one of them
# uses (its modes, its facts). Checked in code (names, and strings that are not
# docstrings); prose that explains the pipeline may mention them.
DIMENSION_WORDS = (
    "architecture", "pruning", "quantization", "regularization", "schedule", "distillation",
    "augmentation", "runtime", "quantized", "int8", "qat", "teacher", "torchscript", "onnxruntime",
    "ort", "openvino", "mixup", "cutmix", "label_smoothing", "unstructured", "structured", "gradual",
)
# Third-party names that contain such a word but name no dimension of paretune's.
NOT_A_DIMENSION = {
    "runtime_env", "code_runtime_env", "get_runtime_context",  # Ray's environment of a worker
    "quantized_engine",  # torch's int8 backend, part of a node's hardware record
    "is_quantized",  # torch.Tensor's attribute (a stored model's packed weights)
    "amx_int8",  # a CPU flag
    "quantized::",  # torch's operator namespace
    "int8",  # as a string: a MAC's precision in the energy model's table, beside "fp32"
}
DIMENSION_PATTERN = re.compile(r"(?<![a-z0-9])(" + "|".join(DIMENSION_WORDS) + r")(?![a-z0-9])", re.IGNORECASE)
DEFERRED = re.compile(r"#\s*deferred:")
# A line that must use such a word for something else says why, in a comment.
NOT_A_DIMENSION_MARK = re.compile(r"#\s*not a dimension:")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _targets(module: str, path: Path, node: ast.AST, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    full = ".".join(base + ([node.module] if node.module else []))
    return [f"{full}.{a.name}" if f"{full}.{a.name}" in known else full for a in node.names]


def imports(known: dict[str, Path]) -> list[tuple[str, str, bool, int, str]]:
    """(importer, imported, local, line, source line) for every project import."""
    found = []
    for module, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        local_nodes = {
            id(inner)
            for outer in ast.walk(tree)
            if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(outer)
            if isinstance(inner, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            for target in _targets(module, path, node, known):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in known and target != module and not module.startswith(target + "."):
                    around = "\n".join(lines[max(0, node.lineno - 2) : node.end_lineno])
                    found.append((module, target, id(node) in local_nodes, node.lineno, around))
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    """The position of a search/ module's sub-package in LAYERS; len(LAYERS) on top."""
    parts = module.split(".")
    if parts[0] != "search":
        return -1  # spaces/ and objectives/ sit below search/
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)


def upward(found) -> list[tuple[str, str, int]]:
    return [(a, b, line) for a, b, _, line, _ in found if layer(b) > layer(a)]


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def dimension_mentions() -> list[str]:
    """Code of search/ and objectives/ that names a built-in dimension: an identifier or
    a string (docstrings and comments aside) with one of DIMENSION_WORDS as a word
    (`_`-separated parts count: `is_quantized`, `teacher_source`)."""
    hits = []
    marked = dimension_mentions.marked = set()
    for package in ("search", "objectives"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            docs = _docstring_lines(ast.parse(text))
            lines = text.splitlines()
            before: list[str] = ["", ""]
            for token in tokenize.generate_tokens(io.StringIO(text).readline):
                after_backends = before == ["backends", "."]  # torch.backends.<engine>: torch's, not a dimension
                before = [before[1], token.string]
                if after_backends:
                    continue
                if token.type not in (tokenize.NAME, tokenize.STRING) or token.start[0] in docs:
                    continue
                if NOT_A_DIMENSION_MARK.search(lines[token.start[0] - 1]):
                    marked.add(f"{path.relative_to(ROOT)}:{token.start[0]}")
                    continue
                if token.string.strip("\"'") in NOT_A_DIMENSION and (token.type == tokenize.STRING or token.string != "int8"):
                    continue
                words = token.string.replace("_", " ")
                if DIMENSION_PATTERN.search(words):
                    row = token.start[0]
                    hits.append(f"{path.relative_to(ROOT)}:{row}: {lines[row - 1].strip()}")
    return list(dict.fromkeys(hits))


def _bindings(module: str, tree: ast.Module, known: dict) -> dict[str, str]:
    """What each top-level name of a module refers to: `name -> module.function`, or
    `name -> module` for an imported module."""
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = f"{module}.{node.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.setdefault(alias.asname or alias.name, full)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    names.setdefault(alias.asname or alias.name.split(".")[0], alias.name)
    return names


def spec_path(start: str = "search.driver.launcher.launch") -> tuple[list[str], list[tuple[str, str]]]:
    """The project functions the spec reaches from `start` (depth first, each once) and
    the calls among them that go up the layer order."""
    known = modules()
    functions: dict[str, tuple[str, ast.AST, dict]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        bindings = _bindings(module, tree, known)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(f"{module}.{node.name}", (module, node, bindings))

    def resolve(expr: ast.AST, bindings: dict) -> str | None:
        if isinstance(expr, ast.Name):
            full = bindings.get(expr.id)
        elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in bindings:
            full = f"{bindings[expr.value.id]}.{expr.attr}"
        else:
            return None
        return full if full in functions else None

    def handed_spec(call: ast.Call) -> bool:
        values = list(call.args) + [k.value for k in call.keywords]
        return any(isinstance(v, ast.Name) and v.id == "spec" for v in values)

    order: list[str] = []
    climbs: list[tuple[str, str]] = []
    seen: set[str] = set()
    calls: dict[str, list[str]] = defaultdict(list)

    def visit(name: str) -> None:
        seen.add(name)
        order.append(name)
        module, node, bindings = functions[name]
        for call in ast.walk(node):
            if not isinstance(call, ast.Call) or not handed_spec(call):
                continue
            handed = [v for a in call.args for v in (a.values if isinstance(a, ast.BoolOp) else [a])]
            callees = [resolve(call.func, bindings)] + [resolve(a, bindings) for a in handed]
            for callee in filter(None, callees):
                calls[name].append(callee)
                if layer(functions[callee][0]) > layer(module):
                    climbs.append((name, callee))
                if callee not in seen:
                    visit(callee)

    visit(start)
    spec_path.calls = calls  # for shortest(): the spec's call graph of the last walk
    return order, climbs


def shortest(start: str, goal: str) -> list[str]:
    """The fewest hand-overs of the spec from `start` to `goal` (after spec_path)."""
    came: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            path = [node]
            while came[path[-1]] is not None:
                path.append(came[path[-1]])
            return path[::-1]
        for nxt in spec_path.calls.get(node, []):
            if nxt not in came:
                came[nxt] = node
                queue.append(nxt)
    return []


def docstring_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.splitlines()[0] if doc else "(no docstring)"


def code_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def print_layout(known: dict[str, Path]) -> None:
    groups: dict[str, list[str]] = defaultdict(list)
    for module in known:
        parts = module.split(".")
        group = ".".join(parts[:2]) if parts[0] == "search" and len(parts) > 2 or module in {f"search.{x}" for x in LAYERS} else parts[0]
        groups[group].append(module)
    print("layout (non-blank lines):")
    for group in sorted(groups, key=lambda g: (g.split(".")[0] != "search", layer(g + ".x") if g != "search" else 99, g)):
        members = sorted(groups[group])
        total = sum(code_lines(known[m]) for m in members)
        init = known.get(group)
        folder = group.replace(".", "/") + "/"
        print(f"  {folder:<16} {total:>6}  {docstring_line(init) if init else ''}")
        names = [m.rsplit(".", 1)[-1] for m in members if m != group and not m.endswith("__main__")]
        print(f"  {'':<16} {'':>6}  {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on any circle, upward import, unexplained local import or dimension name outside spaces/")
    parser.add_argument("--quiet", action="store_true", help="only the counts")
    args = parser.parse_args(argv)

    known = modules()
    found = imports(known)
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b, *_ in found:
        edges[a].add(b)
    for module in known:
        edges.setdefault(module, set())
    rings = circles(edges)
    ups = upward(found)
    local = [(a, b, line, src) for a, b, is_local, line, src in found if is_local]
    unexplained = [(a, b, line) for a, b, line, src in local if not DEFERRED.search(src)]
    mentions = dimension_mentions()

    if not args.quiet:
        print_layout(known)
        print()
    print(f"import circles: {len(rings)}")
    for ring in rings:
        print("  " + " <-> ".join(ring))
    print(f"upward imports (against {' < '.join(LAYERS)} < cli/api): {len(ups)}")
    for a, b, line in ups:
        print(f"  {a}:{line} imports {b}")
    print(f"function-local project imports: {len(local)} ({len(local) - len(unexplained)} with a '# deferred:' comment)")
    for a, b, line in unexplained:
        print(f"  {a}:{line} imports {b} without saying what it defers")
    print(f"lines outside spaces/ naming a dimension: {len(mentions)} "
          f"({len(dimension_mentions.marked)} more say '# not a dimension:' and why)")
    for hit in mentions if not args.quiet else []:
        print("  " + hit)
    order, climbs = spec_path()
    reached = sorted({name.rsplit(".", 1)[0] for name in order})
    print(f"the spec from launch to a trial: {len(order)} functions in {len(reached)} modules, {len(climbs)} calls climbing back up")
    path = shortest("search.driver.launcher.launch", "search.trial.pipeline.run_pipeline")
    print(f"  launch to the trial's pipeline: {len(path) - 1} hand-overs ({' -> '.join(n.rsplit('.', 1)[-1] for n in path)})")
    if not args.quiet:
        for name in order:
            print("  " + name)
    for caller, callee in climbs:
        print(f"  climbs: {caller} -> {callee}")
    bad = rings or ups or unexplained or mentions
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
