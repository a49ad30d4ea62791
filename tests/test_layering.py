"""The import graph keeps its shape: the core knows no transport, edges do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "splitca"
CORE = ["errors", "config", "pki", "_fs", "store", "index", "policy", "authority", "audit"]
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
