"""Every import in the package points down the layer order of nemotron4/layers.py (README "Layout",
docs/architecture.md), and no chain of imports comes back to where it started. Function-level imports count: a
lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

from nemotron4.layers import LAYERS

PACKAGE = Path(__file__).resolve().parents[2] / "nemotron4"


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is named by its __init__.py)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> dict[str, int]:
    """{imported module of the package: line} for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package path: its deepest module
                target = target.rpartition(".")[0]
            if target.startswith("nemotron4") and target != name:
                found.setdefault(target, node.lineno)
    return found


def layer_of(name: str) -> int:
    """Index in LAYERS of the longest prefix that names `name` (the root package's __init__ is listed as such)."""
    key = "nemotron4.__init__" if name == "nemotron4" else name
    best, index = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (key == prefix or key.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{name} is in no layer of nemotron4/layers.py: add it to one"
    return index


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    modules = package_modules(package)
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{PACKAGE.parent / m.replace('.', '/')}:{line}: {m} (layer {layer_of(m)}) imports {t} (layer "
            f"{layer_of(t)})" for m, targets in graph.items() for t, line in targets.items()
            if layer_of(t) > layer_of(m)]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer():
    for name in package_modules():
        layer_of(name)


def test_imports_point_down_the_layers():
    bad = upward_imports(import_graph())
    assert not bad, "upward imports (see nemotron4/layers.py):\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_the_walk_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: a lazy import inside a function and a relative import are both found, an upward one is
    reported and a two-module circle is found."""
    pkg = tmp_path / "nemotron4"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "model.py").write_text("def f():\n    from nemotron4.train import trainer\n")
    (pkg / "train" / "trainer.py").write_text("from .. import model\n")
    graph = import_graph(pkg)
    assert graph["nemotron4.model"] == {"nemotron4.train.trainer": 2}
    assert graph["nemotron4.train.trainer"] == {"nemotron4.model": 1}
    assert cycles(graph) == [["nemotron4.model", "nemotron4.train.trainer"]]
    assert any("nemotron4.model (layer 2) imports nemotron4.train.trainer" in b for b in upward_imports(graph))


def test_readme_layout_matches_the_tree_and_the_layers():
    """The README's Layout block lists every top-level module and package at its layer, and every module of each
    package (but commands/, one file per command) by name; everything it lists exists."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed: dict[str, tuple[int, str]] = {}
    layer = -1
    for line in block.splitlines():
        m = re.match(r"^\s*(\d+)?\s+(nemotron4/\S+)\s+(.*)$", line)
        if m:
            layer = int(m.group(1)) if m.group(1) else layer
            listed[m.group(2)] = (layer, m.group(3))
        elif listed and line.startswith(" " * 20):  # a continued description
            key = list(listed)[-1]
            listed[key] = (listed[key][0], listed[key][1] + " " + line.strip())
    for path, (number, _) in listed.items():
        assert (PACKAGE.parent / path).exists(), f"README Layout lists {path}, which does not exist"
        name = path.removesuffix("/").removesuffix(".py").replace("/", ".")
        assert layer_of(name) == number, f"README Layout puts {path} in layer {number}, nemotron4/layers.py in " \
                                         f"{layer_of(name)}"
    for entry in sorted(PACKAGE.iterdir()):
        if entry.name == "__init__.py" or entry.name.startswith((".", "__")):
            continue
        key = f"nemotron4/{entry.name}/" if entry.is_dir() else f"nemotron4/{entry.name}"
        if entry.is_dir() or entry.suffix == ".py":
            assert key in listed or entry.name == "layers.py", f"README Layout does not list {key}"
        if entry.is_dir() and entry.name != "commands":
            words = listed[key][1].lower().replace("-", "_")
            for module in sorted(entry.glob("*.py")):
                if module.stem != "__init__":
                    assert re.search(rf"\b{module.stem}\b", words), f"README Layout: {key} does not name {module.stem}"
