"""The package's layers import downward only, and nothing imports in a cycle (issue 10, item 3).

Every ``fastbp`` module is parsed (``ast``, never imported) for the ``fastbp`` modules it imports:
``import``/``from ... import`` statements anywhere in the file (a function-level import is an
edge too) and ``importlib.import_module("fastbp...")`` with a constant name.  Each module's layer
comes from ``LAYERS`` (README.md's "Layout" section documents it); a module may import its own
layer or any layer below.  Importing a submodule also runs its parent packages' ``__init__``:
those implicit edges are Python's, not the code's, and are not counted.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fastbp"

# module (or package prefix) -> layer: higher layers may import lower ones, never the reverse.
# The longest matching prefix decides.
LAYERS = {
    "fastbp.__main__": 7, "fastbp.cli": 7, "fastbp.tools": 7,     # command line, developer tools
    "fastbp.models": 6,                                           # estimators
    "fastbp.training": 5,                                         # the one training loop
    "fastbp.nn": 4, "fastbp.optim": 4,                            # layers
    "fastbp.distributed": 4,                                      # data-parallel context (MPI)
    "fastbp.kernels": 3, "fastbp.engine": 3,                      # kernels (twins, compiled), engine
    "fastbp._backend": 2,                                         # the choice of implementation
    # leaves that import nothing of fastbp: the platform (BLAS, ELF), the public exceptions, the
    # version, the bundled data
    "fastbp._platform": 1, "fastbp.exceptions": 1, "fastbp._version": 1, "fastbp.datasets": 1,
    # the package root: the public facade over every layer (its names load lazily, on first use)
    "fastbp": 8,
}

# Upward edges allowed, each with its reason.
ALLOWED_UPWARD = {
    # fastbp.backend() asked before fastbp.kernels was imported: the backend imports the kernels
    # by name so that they register whether the compiled ones load (fastbp._backend's one
    # deliberate dynamic edge; never taken once the kernels are imported, as every layer above does)
    ("fastbp._backend", "fastbp.kernels"),
    # fastbp.load takes the package's public name table (fastbp._LAZY) as its registry of
    # saveable classes, so that a file can name nothing else; read inside the function, when a
    # file is loaded (by then the facade is imported: it is how load is reached)
    ("fastbp.models.persist", "fastbp"),
}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _known():
    """Every module, compiled ones (.pyx) too, to resolve ``from fastbp.x import name``."""
    return set(_modules()) | {_module_name(path) for path in PACKAGE.rglob("*.pyx")}


def _imports(path, known):
    """The fastbp modules the file at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "fastbp"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module and node.module.split(".")[0] == "fastbp":
                for alias in node.names:  # `from fastbp import engine` imports fastbp.engine
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in known else node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).startswith("fastbp")):
            found.add(node.args[0].value)
    return found


def layer(module):
    """The layer of ``module``: its longest prefix in LAYERS ('fastbp' itself only exactly)."""
    matches = [prefix for prefix in LAYERS
               if module == prefix or (prefix != "fastbp" and module.startswith(
                   prefix if prefix.endswith("_") else prefix + "."))]
    if not matches:
        raise KeyError(f"{module} has no layer in tests/test_layers.py's LAYERS")
    return LAYERS[max(matches, key=len)]


def _graph():
    known = _known()
    return {module: _imports(path, known) for module, path in _modules().items()}


def test_every_module_has_a_layer():
    for module in _known():
        layer(module)
    with pytest.raises(KeyError):
        layer("fastbp.new_module")
    assert layer("fastbp.kernels._c_step") == layer("fastbp.kernels") > layer("fastbp._backend")


def test_layers_import_downward_only():
    upward = sorted(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
                    for module, targets in _graph().items() for target in targets
                    if layer(target) > layer(module) and (module, target) not in ALLOWED_UPWARD)
    assert upward == []


def test_the_allowlist_lists_only_edges_that_exist():
    graph = _graph()
    assert all(target in graph[module] for module, target in ALLOWED_UPWARD), \
        "an allowed upward edge is gone: delete it from ALLOWED_UPWARD"


def _cycle(graph):
    """A list of modules forming an import cycle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = {module: {t for t in targets if (module, t) not in ALLOWED_UPWARD}
             for module, targets in _graph().items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert _cycle(graph) == cycle


def test_the_parser_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import fastbp.nn\nfrom fastbp import engine, __version__\n"
                      "def f():\n    from fastbp.training import fit_network\n"
                      "    importlib.import_module('fastbp.models.mlp')\n")
    known = {"fastbp", "fastbp.nn", "fastbp.engine", "fastbp.training", "fastbp.models.mlp"}
    assert _imports(source, known) == {"fastbp.nn", "fastbp.engine", "fastbp", "fastbp.training",
                                       "fastbp.models.mlp"}
