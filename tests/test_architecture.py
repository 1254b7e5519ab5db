"""Dependencies point one way, lowest first: config -> data -> model -> train | serve -> tune ->
aws -> cli. Read with `ast` (nothing is imported), lazy imports inside functions included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# dogbreed.settings, dogbreed.config, dogbreed.hostcpu and dogbreed.hostgpu are shared facts: the
# lowest layer.
LAYERS = {
    "settings": 0,
    "config": 0,
    "hostcpu": 0,
    "hostgpu": 0,
    "data": 1,
    "model": 2,
    "train": 3,
    "serve": 3,
    "tune": 4,
    "aws": 5,
    "cli": 6,
    "__main__": 6,
}


def layer(module: str) -> tuple[int, str] | None:
    """(layer, package) of a dogbreed module; None for `dogbreed` itself (its __init__)."""
    parts = module.split(".")
    if parts[0] != "dogbreed" or len(parts) < 2:
        return None
    assert parts[1] in LAYERS, f"{module}: give the package {parts[1]!r} a layer in LAYERS"
    return LAYERS[parts[1]], parts[1]


def is_module(name: str) -> bool:
    """A dogbreed module or package in src/ (not a dotted key such as "dogbreed.setting")."""
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dogbreed module `source` (the text of `module`) imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dogbreed")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            if base.split(".")[0] != "dogbreed":
                continue
            found.add(base)
            # `from dogbreed.train import loop` imports dogbreed.train.loop too (a name that is
            # no module, such as __version__, is not counted).
            found.update(f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}"))
    return found


MODULE_STRING = re.compile(r"dogbreed(\.\w+)+")
# Run as a child process on purpose (`python -m`), never imported: the precision gate keeps
# OpenVINO and torch out of the training process (model.precision.gate_in_subprocess).
ALLOWED_BY_NAME = {"dogbreed.model.precision -> dogbreed.serve.precision_gate"}


def named_modules(source: str) -> set[str]:
    """Module names written as strings (`python -m NAME`, importlib): the same edge by name."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and MODULE_STRING.fullmatch(node.value)
        and is_module(node.value)
    }


def upward_edges(source: str, module: str, is_package: bool = False) -> list[str]:
    """`a -> b` for each import of a higher layer or of the sibling train <-> serve, and each
    such module named in a string (outside ALLOWED_BY_NAME)."""
    own = layer(module)
    if own is None:
        return []
    by_name = {m for m in named_modules(source) if f"{module} -> {m}" not in ALLOWED_BY_NAME}
    edges = []
    for target in sorted(imported_modules(source, module, is_package) | by_name):
        other = layer(target)
        if other is None or other[1] == own[1]:
            continue
        if other[0] > own[0] or {own[1], other[1]} == {"train", "serve"}:
            edges.append(f"{module} -> {target}")
    return edges


def module_name(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def package_sources() -> list[tuple[str, bool, str]]:
    """(module name, is a package, source) of every module of dogbreed."""
    files = sorted((SRC / "dogbreed").rglob("*.py"))
    assert len(files) > 20
    return [(*module_name(path), path.read_text()) for path in files]


def test_no_module_imports_a_higher_layer() -> None:
    edges = []
    for name, is_package, source in package_sources():
        edges += upward_edges(source, name, is_package)
    assert not edges, "imports against the layer order:\n" + "\n".join(edges)


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` (module -> the modules it imports) as a path, or [] if none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done or module not in graph:
            return []
        for target in sorted(graph[module] - {module}):
            if cycle := visit(target, [*path, module]):
                return cycle
        done.add(module)
        return []

    for module in sorted(graph):
        if cycle := visit(module, []):
            return cycle
    return []


def test_no_two_modules_import_each_other() -> None:
    """Lazy imports included: a cycle means a fact lives in the wrong module."""
    graph = {
        name: imported_modules(source, name, is_package)
        for name, is_package, source in package_sources()
    }
    cycle = import_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_edge_finder_reports_upward_lazy_and_relative_imports() -> None:
    source = """
from dogbreed.data.images import open_rgb
from dogbreed import hostcpu

def later():
    from dogbreed.serve.backends import cpu_backend
    import dogbreed.aws.s3
    from ..train import loop
"""
    assert upward_edges(source, "dogbreed.model.precision") == [
        "dogbreed.model.precision -> dogbreed.aws.s3",
        "dogbreed.model.precision -> dogbreed.serve.backends",
        "dogbreed.model.precision -> dogbreed.train",
        "dogbreed.model.precision -> dogbreed.train.loop",
    ]
    assert upward_edges("from dogbreed.train import loop", "dogbreed.serve.cli") == [
        "dogbreed.serve.cli -> dogbreed.train",
        "dogbreed.serve.cli -> dogbreed.train.loop",
    ]
    assert upward_edges("from dogbreed.model import artifact", "dogbreed.serve.cli") == []
    assert upward_edges("from dogbreed import hostcpu", "dogbreed.config") == []
    by_name = 'subprocess.run([sys.executable, "-m", "dogbreed.aws.s3"])'
    assert upward_edges(by_name, "dogbreed.data.fetch") == [
        "dogbreed.data.fetch -> dogbreed.aws.s3"
    ]
    gate = 'GATE_MODULE = "dogbreed.serve.precision_gate"'
    assert upward_edges(gate, "dogbreed.model.precision") == []  # ALLOWED_BY_NAME
    key = '_METADATA_KEY = "dogbreed.setting"'  # a dotted key, not a module
    assert upward_edges(key, "dogbreed.config") == []
