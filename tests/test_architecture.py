"""The package's shape, read from its source: layers, no circles, no reaching in.

skbert's modules form layers, each importing only from the layers below it::

    entry points   skbert (the public API), skbert.__main__, conftest (doctests)
    interfaces     cli, engines, utils, _testing
    estimators     probing, _classifier  >  _vectorizer, _finetune  >  _persistence, _params
    extraction     _extraction (ExtractionSpec; batches, cached, pooling, assembly, chunking)
    storage, model _cache (bytes and keys, nothing of BERT), _model (the only user of
                   transformers), _diagnostics (numbers about vectors)
    foundation     _validation, _whitening, datasets  >  exceptions, _version

These tests parse the source (nothing is imported) and fail on an import
circle, an import that goes up a layer (or sideways into another unit of the
same layer), a private name taken from another package, and an import of the
package's own modules hidden inside a function for any reason other than
deferring a heavy library (torch, transformers, matplotlib, fsspec, the engines).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skbert"

#: (rank, units): a module may import its own unit, or any unit of a lower rank.
LAYERS = [
    (0, ["skbert._version", "skbert.exceptions"]),
    (1, ["skbert._validation", "skbert._whitening", "skbert.datasets"]),
    (2, ["skbert._cache", "skbert._model", "skbert._diagnostics"]),
    (3, ["skbert._extraction"]),
    (4, ["skbert._persistence", "skbert._params"]),
    (5, ["skbert._vectorizer", "skbert._finetune"]),
    (6, ["skbert.probing", "skbert._classifier"]),
    (7, ["skbert.cli", "skbert.engines", "skbert.utils", "skbert._testing"]),
    (8, ["skbert", "skbert.__main__", "skbert.conftest"]),
]
RANK = {unit: rank for rank, units in LAYERS for unit in units}

#: Third-party libraries an import inside a function may defer.
HEAVY = {
    "torch", "transformers", "matplotlib", "fsspec", "dask", "distributed", "ray",
    "pyspark", "pandas", "pyarrow",
}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module):
    """The layer unit of ``module``: the longest entry of LAYERS that holds it."""
    best = None
    for unit in RANK:
        if module == unit or module.startswith(unit + "."):
            if best is None or len(unit) > len(best):
                best = unit
    return best


def _package(module):
    path = FILES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


class _Import:
    def __init__(self, source, target, names, node, inner):
        self.source, self.target, self.names, self.node, self.inner = source, target, names, node, inner

    def __repr__(self):
        return f"{self.source} line {self.node.lineno}: {ast.unparse(self.node)}"


def _imports():
    """Every import of the package's own modules, inside functions or not."""
    found = []
    for name, path in FILES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inner = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner.update(id(n) for n in ast.walk(fn))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "skbert":
                        found.append(_Import(name, _resolve(alias.name), [], node, id(node) in inner))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != "skbert":
                    continue
                plain = []
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    if sub in FILES:  # a module imported by name
                        found.append(_Import(name, sub, [], node, id(node) in inner))
                    else:
                        plain.append(alias.name)
                if plain:
                    found.append(_Import(name, _resolve(module), plain, node, id(node) in inner))
    return found


def _resolve(module):
    while module not in FILES:
        module = module.rpartition(".")[0]
    return module


IMPORTS = _imports()


def _heavy_at_top(module):
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in HEAVY for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in HEAVY:
            return True
    return False


def test_every_module_has_a_layer():
    assert [m for m in FILES if _unit(m) is None] == []


def test_no_import_circles():
    graph = {m: set() for m in FILES}
    for imp in IMPORTS:
        if imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components.
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_imports_only_go_down_the_layers():
    upward = []
    for imp in IMPORTS:
        src, dst = _unit(imp.source), _unit(imp.target)
        if src == dst:
            continue
        if RANK[dst] >= RANK[src]:
            upward.append(imp)
    assert upward == []


def test_no_private_names_from_another_package():
    reaching = [
        imp for imp in IMPORTS
        if _package(imp.source) != _package(imp.target)
        and any(n.startswith("_") and not n.startswith("__") for n in imp.names)
    ]
    assert reaching == []


def test_no_private_attributes_of_another_package_s_modules():
    reaching = []
    for name, path in FILES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}  # local name -> module it names
        for imp in IMPORTS:
            if imp.source == name and not imp.names:
                for alias in imp.node.names:
                    bound[alias.asname or alias.name.split(".")[-1]] = imp.target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and _package(bound[node.value.id]) != _package(name)
            ):
                reaching.append(f"{name} line {node.lineno}: {node.value.id}.{node.attr}")
    assert reaching == []


def test_imports_inside_functions_only_defer_heavy_libraries():
    hidden = [imp for imp in IMPORTS if imp.inner and not _heavy_at_top(imp.target)]
    assert hidden == []


@pytest.mark.parametrize("module", ["skbert._cache", "skbert._model", "skbert._extraction"])
def test_a_subpackage_s_modules_never_import_its_init(module):
    back = [imp for imp in IMPORTS if imp.source.startswith(module + ".") and imp.target == module]
    # The package __init__ of _extraction holds ExtractionSpec and imports nothing:
    # its modules may read it. The others re-export their modules, so a module
    # importing them would be a circle.
    if module == "skbert._extraction":
        assert [imp for imp in IMPORTS if imp.source == module] == []
    else:
        assert back == []


def test_only_the_model_package_imports_transformers():
    users = set()
    for name, path in FILES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module]
            if any(m.split(".")[0] in ("transformers", "sentence_transformers") for m in mods):
                users.add(name)
    # _testing builds tiny models for the tests and for users' own test suites.
    assert {u for u in users if _unit(u) != "skbert._model"} <= {"skbert._testing"}


def test_importing_the_package_loads_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, skbert, skbert.cli, skbert.probing, skbert.datasets, skbert.engines\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'fsspec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
