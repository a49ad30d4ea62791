"""The import graph keeps its shape: the core knows no transport, edges do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "splitca"
USE_CASES = sorted(p.stem for p in PKG.glob("usecases_*.py"))
CORE = [
    "errors",
    "config",
    "pki",
    "_fs",
    "store",
    "index",
    "policy",
    "authority",
    "audit",
    "ports",
    "filestore",
    "signer",
    *USE_CASES,
]
# What implements the ports: the use cases and the ports reach storage only through them.
STORE_IMPLEMENTATIONS = {"filestore", "store", "index", "_batch", "signer"}
TRANSPORTS = {"click", "requests", "wsgiref", "cheroot", "boto3", "http", "urllib3"}
EDGES = {"wsgi", "server", "cli", "crlsync", "apache"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            out.add(("." * node.level) + mod)
    return out


def test_core_modules_import_no_transport_or_edge() -> None:
    for name in CORE:
        found = imports(PKG / f"{name}.py")
        top = {i.lstrip(".").split(".")[0] for i in found if not i.startswith(".")}
        assert not top & TRANSPORTS, f"{name} imports {top & TRANSPORTS}"
        local = {i.lstrip(".").split(".")[0] for i in found if i.startswith(".")}
        assert not local & EDGES, f"{name} imports edge module(s) {local & EDGES}"


def test_every_module_has_a_one_line_docstring() -> None:
    for path in sorted(PKG.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.relative_to(PKG)} has no module docstring"
        assert len(doc.splitlines()[0]) <= 110, (
            f"{path.relative_to(PKG)}: first docstring line too long"
        )


def test_one_place_maps_errors_to_http_codes() -> None:
    """Only httpapp.py holds status codes for errors; handlers raise domain errors."""
    for name in CORE:
        text = (PKG / f"{name}.py").read_text()
        assert "HTTPStatus" not in text and "status_code" not in text, name


def _local_imports(path: Path) -> set[str]:
    """splitca modules *path* imports (at any depth of the file, lazy imports included)."""
    out: set[str] = set()
    for imp in imports(path):
        if imp.startswith("."):
            name = imp.lstrip(".").split(".")[0]
            if name:
                out.add(name)
        elif imp.startswith("splitca."):
            out.add(imp.split(".")[1])
    return out


def test_core_does_not_reach_adapters_or_edges_even_indirectly() -> None:
    """Following imports transitively, the core never loads an edge or an outbound adapter."""
    forbidden = EDGES | {
        "client",
        "registry_http",
        "registry_s3",
        "autosign_registry",
        "compose",
        "cli",
    }
    for name in CORE:
        seen: set[str] = set()
        todo = [name]
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            seen.add(mod)
            path = PKG / f"{mod}.py"
            if path.exists():
                todo.extend(_local_imports(path))
                top = {i.split(".")[0] for i in imports(path) if not i.startswith(".")}
                assert not top & TRANSPORTS, (
                    f"{name} reaches {mod}, which imports {top & TRANSPORTS}"
                )
        assert not seen & forbidden, f"{name} reaches {sorted(seen & forbidden)}"


def test_use_cases_and_ports_know_no_store_implementation() -> None:
    """The use cases talk to the CAStore/Signer ports, never to the file store behind them."""
    assert USE_CASES, "no use-case modules found"
    for name in ["ports", *USE_CASES]:
        reached = _local_imports(PKG / f"{name}.py") & STORE_IMPLEMENTATIONS
        assert not reached, f"{name} imports store implementation(s) {sorted(reached)}"


def test_edges_reach_the_ca_only_through_its_use_cases() -> None:
    """HTTP, CLI and server call the facade's use cases; the store behind it is not theirs."""
    import re

    internals = re.compile(r"\bca\.(cadir|index|store|signer|deps)\b")
    edges = [PKG / "wsgi.py", PKG / "wsgi_registrations.py", PKG / "server.py"]
    for path in [*edges, *sorted((PKG / "cli").glob("*.py"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not internals.search(line), f"{path.relative_to(PKG)}:{number}: {line.strip()}"


# --- no import cycles ---------------------------------------------------------------------------


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Which modules of the package at *root* each module imports, at any depth of the file
    (function-level and ``TYPE_CHECKING`` imports included: a cycle there is still a cycle)."""
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            for target in targets:
                while target and target not in files:  # `import pkg.mod.attr`, or not ours
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_anywhere_in_the_package() -> None:
    graph = import_graph(PKG)
    assert "splitca.wsgi" in graph and "splitca.cli._base" in graph  # the walk saw the package
    assert "splitca.compose" in graph["splitca.cli._base"]  # a function-level import counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""A synthetic module."""\n{text}')
    return root / "pkg"


def test_the_cycle_check_finds_planted_cycles(tmp_path: Path) -> None:
    """The checker is not vacuous: it finds a cycle through a lazy import in a subpackage."""
    acyclic = {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "from .sub import c\nimport os\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..d import thing\n",
        "d.py": "thing = 1\n",
    }
    assert find_cycle(import_graph(_plant(tmp_path / "ok", acyclic))) is None
    planted = {**acyclic, "d.py": "def thing():\n    from .a import b\n    return b\n"}
    cycle = find_cycle(import_graph(_plant(tmp_path / "bad", planted)))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c", "pkg.d"}
    two = {"__init__.py": "", "x.py": "import pkg.y\n", "y.py": "from pkg.x import z\n"}
    assert find_cycle(import_graph(_plant(tmp_path / "abs", two))) in (
        ["pkg.x", "pkg.y", "pkg.x"],
        ["pkg.y", "pkg.x", "pkg.y"],
    )


# --- one error map each for HTTP and the CLI ----------------------------------------------------------


def test_cli_commands_hold_no_literal_exit_codes() -> None:
    """Commands end through cli._base (finish / EXIT_CODES / Outcome), never with their own number."""
    for path in sorted((PKG / "cli").glob("*.py")):
        if path.name == "_base.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                text = ast.unparse(node.func)
                assert text not in ("sys.exit", "ctx.exit", "SystemExit", "exit", "os._exit"), (
                    f"{path.name}:{node.lineno}: {ast.unparse(node)}"
                )
                assert not text.endswith(("exceptions.Exit", "click.Exit")), (
                    f"{path.name}:{node.lineno}: {ast.unparse(node)}"
                )
            if isinstance(node, ast.Raise) and node.exc is not None:
                assert "SystemExit" not in ast.unparse(node.exc), f"{path.name}:{node.lineno}"


def test_route_handlers_build_no_answers_from_errors() -> None:
    """No ``except`` in an HTTP route module builds a response: a route's own answers for an
    error class are declared in its route table (``errors=``), the rest is httpapp's one map."""
    for name in ("wsgi", "wsgi_registrations"):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler):
                body = ast.unparse(ast.Module(body=node.body, type_ignores=[]))
                in_app_start = "splitca is not configured" in body  # before any route exists
                assert in_app_start or "Response" not in body, f"{name}.py:{node.lineno}: {body}"
