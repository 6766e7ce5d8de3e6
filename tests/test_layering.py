"""DESIGN §4: each layer imports only the layers below it."""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).parent.parent / "src" / "ktk_arrow"

# module -> rank; a module may import only modules of strictly lower rank
RANKS = {
    "errors": 0,
    "_optional": 0,
    "spec": 1,
    "storage": 2,
    "commit": 3,
    "planning": 4,
    "write": 5,
    "arrow": 5,
    "compact": 6,
    "rows": 6,
    "changes": 6,
    "check": 6,
    "maintenance": 7,
    "io": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


# modules that are one layer with another: they may import each other
SIBLINGS = {
    "polars": "arrow",  # KartothekDataset.to_polars()
    "duckdb": "arrow",  # KartothekDataset.to_duckdb()
}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    return SIBLINGS.get(top, top)


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        yield ".".join(rel.parts), path


def _imports(module: str, path: pathlib.Path):
    tree = ast.parse(path.read_text())
    package = module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                if node.module is None:
                    for alias in node.names:
                        yield ".".join([*base, alias.name])
                    continue
                yield target
            elif node.module and node.module.startswith("ktk_arrow."):
                yield node.module[len("ktk_arrow.") :]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ktk_arrow."):
                    yield alias.name[len("ktk_arrow.") :]


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda x: str(x))
def test_module_imports_only_lower_layers(module, path):
    layer = _layer(module)
    if module.endswith("__init__") and "." not in module:
        return
    rank = RANKS[layer]
    for target in _imports(module, path):
        target_layer = _layer(target)
        if not target_layer or target_layer == layer:
            continue
        assert target_layer in RANKS, f"{module} imports unknown layer {target}"
        assert RANKS[target_layer] < rank or target_layer in ("errors", "_optional"), (
            f"{module} (layer {layer}) must not import {target} (layer {target_layer})"
        )


def test_spec_does_no_io():
    forbidden = {"fsspec", "os", "boto3", "s3fs", "gcsfs", "adlfs", "pyarrow.fs", "open"}
    for path in (SRC / "spec").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            else:
                continue
            assert not (names & forbidden), f"{path.name} imports {names & forbidden}"
