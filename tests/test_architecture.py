"""The package's layers (docs/architecture.md), read from its source: a module imports
only from its own layer or below, the imports have no circle, and hubertkit's own
modules are imported at the top of a module (the CLI and the package root excepted:
they load a command's library only when it runs)."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hubertkit"

# bottom to top; a module's layer is its first name below hubertkit
LAYERS = [
    {"errors", "fileio", "progress", "parallel", "plots", "optional"},
    {"config"},
    {"data"},
    {"model"},
    {"features"},
    {"cluster"},
    {"train"},
    {"recipes"},
    {"cli", "__main__", "__init__"},
]
LAZY_ALLOWED = {"hubertkit.cli", "hubertkit"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported hubertkit module, whether the import is inside a function)."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hubertkit"):
            for alias in node.names:  # `from hubertkit.x import y` may name the module x.y
                sub = f"{node.module}.{alias.name}"
                out.append((sub if sub in known else node.module, id(node) in inside))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in inside) for a in node.names if a.name.startswith("hubertkit")]
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    found = [i for i, names in enumerate(LAYERS) if top in names]
    assert found, f"{module} is in no layer of LAYERS: place it"
    return found[0]


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {m: {target for target, _ in imports(p, known)} - {m} for m, p in modules().items()}


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    upward = [f"{m} -> {t}" for m, targets in graph().items() for t in targets if layer(t) > layer(m)]
    assert not upward, "imports running up the layers:\n" + "\n".join(upward)


def test_no_import_circles():
    g, state, circles = graph(), {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(g.get(m, ())):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_hubertkit_imports_are_at_the_top_of_modules():
    known = set(modules())
    lazy = [f"{m} imports {t} inside a function" for m, p in modules().items() if m not in LAZY_ALLOWED
            for t, inside in imports(p, known) if inside]
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize("bad, expected", [
    ({"hubertkit.data.x": {"hubertkit.train.trainer"}}, "up"),
    ({"hubertkit.data.a": {"hubertkit.data.b"}, "hubertkit.data.b": {"hubertkit.data.a"}}, "circle"),
])
def test_the_checks_catch_what_they_look_for(bad, expected, monkeypatch):
    """The two checks above fail on an upward import and on a circle."""
    monkeypatch.setattr(__import__(__name__), "graph", lambda: bad)
    check = test_every_module_has_a_layer_and_imports_nothing_above_it if expected == "up" else test_no_import_circles
    with pytest.raises(AssertionError):
        check()


def test_the_architecture_doc_names_only_what_exists():
    """docs/architecture.md's file paths exist, and each class, constant and function it
    names in backquotes is defined in the package (a rename cannot leave the doc behind)."""
    root = PACKAGE.parent
    doc = (root / "docs" / "architecture.md").read_text()
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    named = set()
    for token in re.findall(r"`([^`\n]+)`", doc):
        head = token.split("(")[0]
        if re.fullmatch(r"[\w/]+(\.py|/)", head):  # a path, from the repository, the package or a folder in it
            assert any((base / head).exists() for base in (root, PACKAGE, *PACKAGE.rglob("*/"))), f"{token}: no such path"
        elif "(" in token or re.fullmatch(r"[A-Z][A-Za-z]+|[A-Z][A-Z_]+[A-Z]", token):
            named.add(head.rsplit(".", 1)[-1].rsplit("/", 1)[-1])
    missing = [n for n in sorted(named) if n.startswith("@")
               and not re.search(rf"^def {n[1:]}\b", source, re.M)
               or not n.startswith("@") and not re.search(rf"^\s*(class |def ){n}\b|^\s*{n}\s*[:=]", source, re.M)]
    assert len(named) > 15 and not missing, missing
