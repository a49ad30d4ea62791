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
    """Only wsgi.py holds status codes for errors; handlers raise domain errors."""
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
