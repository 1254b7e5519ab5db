"""Dependencies point one way, lowest first: config -> data -> model -> train | serve -> tune ->
aws -> cli. Read with `ast` (nothing is imported), lazy imports inside functions included."""

from __future__ import annotations

import ast
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
            if base == "dogbreed":  # `from dogbreed import hostcpu`; __version__ is no module
                found.update(f"dogbreed.{a.name}" for a in node.names if a.name in LAYERS)
    return found


def upward_edges(source: str, module: str, is_package: bool = False) -> list[str]:
    """`a -> b` for each import of a higher layer or of the sibling train <-> serve."""
    own = layer(module)
    if own is None:
        return []
    edges = []
    for target in sorted(imported_modules(source, module, is_package)):
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


def test_no_module_imports_a_higher_layer() -> None:
    files = sorted((SRC / "dogbreed").rglob("*.py"))
    assert len(files) > 20
    edges = []
    for path in files:
        name, is_package = module_name(path)
        edges += upward_edges(path.read_text(), name, is_package)
    assert not edges, "imports against the layer order:\n" + "\n".join(edges)


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
    ]
    assert upward_edges("from dogbreed.train import loop", "dogbreed.serve.cli") == [
        "dogbreed.serve.cli -> dogbreed.train",
    ]
    assert upward_edges("from dogbreed.model import artifact", "dogbreed.serve.cli") == []
    assert upward_edges("from dogbreed import hostcpu", "dogbreed.config") == []
