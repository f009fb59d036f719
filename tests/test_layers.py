"""The package's layers point one way, and no module imports itself back.

Read top-down: cli -> web -> run -> plan -> {config, sources} -> {imap, store}
-> the base modules (errors, secrets, log, fs). A module may import its own layer
or any layer below; imap and store know nothing of each other; nothing but
``__main__`` imports cli, and nothing but cli imports web (the ``serve`` command). Imports inside functions and under ``TYPE_CHECKING``
count as well: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "imapsync_decl"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Layer of each top-level part of the package; higher may import lower, never upward.
LAYERS: dict[str, int] = {
    "__main__": 8,
    "cli": 7,
    "web": 6,
    "run": 5,
    "plan": 4,
    "config": 3,
    "sources": 3,
    "imap": 2,
    "store": 2,
    "errors": 1,
    "secrets": 1,
    "log": 1,
    "fs": 1,
    "": 0,  # the package itself (its version)
}
# Parts of one layer that must not import each other.
INDEPENDENT = [frozenset({"imap", "store"})]
MAX_TOP_LEVEL_MODULES = 6


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def sources(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, is a package)."""
    return {
        module_name(path, root): (path.read_text(), path.name == "__init__.py")
        for path in sorted(root.rglob("*.py"))
    }


def imports(name: str, source: str, is_package: bool, modules: Iterable[str]) -> set[str]:
    """The modules of the package that ``name`` imports (a name imported from a package
    counts as its submodule when there is one)."""
    known = set(modules)
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            submodules = [f"{origin}.{alias.name}" for alias in node.names]
            targets = [s for s in submodules if s in known]
            if len(targets) < len(submodules):  # some names come from origin itself
                targets.append(origin)
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph(modules: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    return {
        name: imports(name, source, is_package, modules)
        for name, (source, is_package) in modules.items()
    }


def part(module: str) -> str:
    rest = module.removeprefix(PACKAGE).lstrip(".")
    return rest.split(".")[0]


def upward_imports(edges: Mapping[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = part(source), part(target)
            if a == b:
                continue
            if a not in LAYERS or b not in LAYERS:
                wrong.append(
                    f"{source} -> {target}: {a or b!r} has no layer in tests/test_layers.py"
                )
            elif LAYERS[b] > LAYERS[a]:
                wrong.append(f"{source} -> {target}: upward ({a} is below {b})")
            elif frozenset({a, b}) in INDEPENDENT:
                wrong.append(f"{source} -> {target}: {a} and {b} must not know each other")
    return wrong


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_layer_above_it() -> None:
    assert upward_imports(graph(sources())) == []


def test_there_are_no_import_cycles() -> None:
    assert cycles(graph(sources())) == []


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part(name) for name in sources()}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_at_most_six_modules_stay_at_the_top_level() -> None:
    top = sorted(path.name for path in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_subpackage_says_what_it_owns() -> None:
    for init in sorted(ROOT.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init} needs a docstring"
        assert len(docstring.split()) >= 20, f"{init} needs a paragraph"


def planted(tmp_path: Path, files: Mapping[str, str]) -> dict[str, set[str]]:
    root = tmp_path / PACKAGE
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return graph(sources(root))


def test_the_check_finds_a_planted_upward_import(tmp_path: Path) -> None:
    edges = planted(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": "",
            "store/index.py": "from imapsync_decl.plan.planner import make_plan\n",
            "plan/__init__.py": "",
            "plan/planner.py": "from imapsync_decl.store import index\n",
            "imap/__init__.py": "",
            "imap/session.py": "def f():\n    from ..store.index import Index\n",
        },
    )
    assert upward_imports(edges) == [
        "imapsync_decl.imap.session -> imapsync_decl.store.index: imap and store must not "
        "know each other",
        "imapsync_decl.store.index -> imapsync_decl.plan.planner: upward (store is below plan)",
    ]
    assert cycles(edges) == [["imapsync_decl.plan.planner", "imapsync_decl.store.index"]]


def test_the_check_passes_a_downward_import(tmp_path: Path) -> None:
    edges = planted(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "run/__init__.py": "",
            "run/service.py": "from imapsync_decl.plan import planner\nimport imapsync_decl.errors\n",
            "plan/__init__.py": "",
            "plan/planner.py": "from imapsync_decl.errors import ImapsyncError\n",
        },
    )
    assert edges["imapsync_decl.run.service"] == {
        "imapsync_decl.plan.planner",
        "imapsync_decl.errors",
    }
    assert upward_imports(edges) == []
    assert cycles(edges) == []
