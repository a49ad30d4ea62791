"""The import graph keeps its shape: layers come from the folders, edges do not import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "splitca"

# A module's layer is its folder below the package; top-level modules are leaves or wiring.
LEAVES = {"errors", "config", "clock", "fs"}
WIRING = {"", "compose", "authority", "wsgi", "__main__"}  # the composition root and its shims
# What each layer may import (besides itself and the leaves). `cli` is the outermost edge: its
# commands start the server (http) and run sync-crl / apache-config (split).
MAY_IMPORT: dict[str, set[str]] = {
    "leaves": {"pki"},  # config checks names with pki
    "pki": set(),
    "core": {"pki"},
    "store": {"pki", "core"},
    "enrollment": {"pki", "core"},
    "http": {"pki", "core", "enrollment", "wiring"},
    "split": {"pki", "core"},
    # The operator's Admin port: over the facade (wiring) here, or over the CA's HTTP API.
    "admin": {"pki", "core", "enrollment", "wiring"},
    "cli": {"pki", "core", "enrollment", "http", "split", "admin", "wiring"},
    "wiring": {"pki", "core", "store", "enrollment", "http", "split", "admin", "cli"},
}
# Named exceptions: the registry's HTTP backend and the remote Admin use the one outbound
# HTTP client.
ALSO_ALLOWED = {("enrollment.backends.http", "split.client"), ("admin.remote", "split.client")}
# No transport library in the pure layers.
PURE = {"leaves", "pki", "core"}
TRANSPORTS = {"click", "requests", "wsgiref", "cheroot", "boto3", "botocore", "http", "urllib3"}
TRANSPORTS |= {"psycopg", "psycopg2", "socketserver"}
# Concrete implementations: only the composition root (compose) names them outside their
# own folder; the facade (authority) is handed them.
CONCRETE = {"FileStore", "KeyFileSigner", "DirectoryRegistry", "HttpRegistry", "S3Registry"}
CONCRETE |= {"RegistryAutosigner", "Index", "CADir", "GroupCommit", "AuditLog"}
CONCRETE |= {"PgStore", "Database", "PgRegistry", "PgLedger", "PgAudit"}
CONCRETE |= {"LocalAdmin", "RemoteAdmin"}
NAMES_CONCRETE = {"compose"}


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(root: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """Per module of the package at *root*: (absolute target, names) for every import at any
    depth of the file (function-level and ``TYPE_CHECKING`` imports included)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(root, path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: list[tuple[str, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                found.append((target, [a.name for a in node.names]))
        out[name] = found
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Which modules of the package at *root* each module imports (lazy imports count)."""
    files = set(_imports(root))
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, found in _imports(root).items():
        for target, names in found:
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            for t in subs if names and len(subs) == len(names) else [target, *subs]:
                while t and t not in files:  # `import pkg.mod.attr`, or not ours
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def layer_of(module: str) -> str:
    """``pkg.core.usecases.sign`` -> ``core``; ``pkg.fs`` -> ``leaves``; ``pkg.compose`` -> ``wiring``."""
    parts = module.split(".")[1:]
    if len(parts) <= 1:
        leaf = parts[0] if parts else ""
        if leaf in LEAVES:
            return "leaves"
        if leaf in WIRING:
            return "wiring"
    layer = parts[0]  # a folder (its __init__ or a module inside it)
    assert layer in MAY_IMPORT, f"{module}: top-level module or folder with no layer rule"
    return layer


def layering_violations(root: Path) -> list[str]:
    """Every break of the layer rules in the package at *root* (empty when it keeps its shape)."""
    pkg = root.name
    graph = import_graph(root)
    problems: list[str] = []
    for name, targets in sorted(graph.items()):
        layer = layer_of(name)
        short = name.partition(".")[2]
        for target in sorted(targets):
            other = layer_of(target)
            allowed = other in ("leaves", layer) or other in MAY_IMPORT[layer]
            if not allowed and (short, target.partition(".")[2]) not in ALSO_ALLOWED:
                problems.append(f"{name} ({layer}) imports {target} ({other})")
            leaf = target.rpartition(".")[2]
            private = leaf.startswith("_") and not leaf.startswith("__")
            if private and target.rpartition(".")[0] != (
                name if (root / Path(*short.split("."))).is_dir() else name.rpartition(".")[0]
            ):
                problems.append(f"{name} imports the private module {target} of another folder")
    for name, found in sorted(_imports(root).items()):
        layer = layer_of(name)
        short = name.partition(".")[2]
        for target, names in found:
            top = target.split(".")[0]
            if layer in PURE and top in TRANSPORTS:
                problems.append(f"{name} ({layer}) imports the transport library {target}")
            if top != pkg or short in NAMES_CONCRETE:
                continue
            same_folder = layer_of(target) == layer and layer not in ("leaves", "wiring")
            named = sorted(set(names) & CONCRETE)
            if named and not same_folder:
                problems.append(f"{name} names the concrete class(es) {named} from {target}")
    return problems


def test_the_package_keeps_its_layers() -> None:
    """Layers from the folders: core and pki import no edge, store, backend or transport;
    edges (http, split) do not import each other; only the composition root names concrete
    stores and backends; no private module is imported from another folder."""
    graph = import_graph(PKG)
    assert {"splitca.core.ports", "splitca.http.app", "splitca.store.files.filestore"} <= set(graph)
    assert layering_violations(PKG) == []


def test_core_does_not_reach_edges_or_adapters_even_indirectly() -> None:
    """Following imports transitively, core and pki never load a module outside leaves/pki/core."""
    graph = import_graph(PKG)
    for start in sorted(m for m in graph if layer_of(m) in ("core", "pki")):
        seen: set[str] = set()
        todo = [start]
        while todo:
            mod = todo.pop()
            if mod not in seen:
                seen.add(mod)
                todo.extend(graph[mod])
        outside = sorted(m for m in seen if layer_of(m) not in PURE)
        assert not outside, f"{start} reaches {outside}"


def test_the_layer_check_reports_planted_violations(tmp_path: Path) -> None:
    """The checker is not vacuous: on a synthetic tree it reports a core module importing
    the HTTP edge, a transport library in the core, an edge importing another edge, a
    concrete store named outside the composition root, and a private module used across
    folders; the same tree without them is clean."""
    clean = {
        "__init__.py": "",
        "errors.py": "",
        "compose.py": "from .store.files.filestore import FileStore\nfrom .http import app\n",
        "core/__init__.py": "",
        "core/ports.py": "from ..errors import x\nfrom . import _util\n",
        "core/_util.py": "",
        "store/__init__.py": "",
        "store/files/__init__.py": "",
        "store/files/filestore.py": "from ...core import ports\nclass FileStore: ...\n",
        "http/__init__.py": "",
        "http/app.py": "from ..core.ports import y\nfrom ..compose import z\n",
        "split/__init__.py": "",
        "split/sync.py": "from ..core import ports\n",
    }
    assert layering_violations(_plant(tmp_path / "ok", clean)) == []
    planted = {
        **clean,
        "core/ports.py": "from ..errors import x\n"
        "def later():\n    from ..http import app\n    import requests\n",
        "split/sync.py": "from ..http.app import y\nfrom ..core import _util\n",
        "http/app.py": "from ..store.files.filestore import FileStore\n",
    }
    found = layering_violations(_plant(tmp_path / "bad", planted))
    assert "pkg.core.ports (core) imports pkg.http.app (http)" in found
    assert "pkg.core.ports (core) imports the transport library requests" in found
    assert "pkg.split.sync (split) imports pkg.http.app (http)" in found
    assert "pkg.split.sync imports the private module pkg.core._util of another folder" in found
    assert "pkg.http.app (http) imports pkg.store.files.filestore (store)" in found
    assert any("pkg.http.app names the concrete class(es) ['FileStore']" in f for f in found)
    assert len(found) == 6, found


def test_every_module_has_a_one_line_docstring() -> None:
    for path in sorted(PKG.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.relative_to(PKG)} has no module docstring"
        assert len(doc.splitlines()[0]) <= 110, (
            f"{path.relative_to(PKG)}: first docstring line too long"
        )


def test_long_modules_say_why_at_the_top() -> None:
    """Modules stay under ~400 lines, or say at their top why not."""
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > 420:
            after_docstring = lines[ast.parse(text).body[0].end_lineno or 0]
            assert after_docstring.startswith("# Over 400 lines because"), (
                f"{path.relative_to(PKG)}: {len(lines)} lines and no reason below its docstring"
            )


def test_every_folder_says_which_layer_it_is() -> None:
    for init in sorted(PKG.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 1, f"{init.relative_to(PKG)}: one-line docstring"


def test_one_place_maps_errors_to_http_codes() -> None:
    """Only http/app.py holds status codes for errors; the core and stores raise domain errors."""
    for folder in ("core", "pki", "store"):
        for path in sorted((PKG / folder).rglob("*.py")):
            text = path.read_text()
            assert "HTTPStatus" not in text and "status_code" not in text, path


def test_edges_reach_the_ca_only_through_its_use_cases() -> None:
    """HTTP, CLI and server call the facade's use cases; the store behind it is not theirs."""
    internals = re.compile(r"\bca\.(cadir|index|store|signer|deps)\b")
    for path in [*sorted((PKG / "http").glob("*.py")), *sorted((PKG / "cli").glob("*.py"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not internals.search(line), f"{path.relative_to(PKG)}:{number}: {line.strip()}"


# --- no import cycles ---------------------------------------------------------------------------


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
    assert (
        "splitca.http.routes_ca" in graph and "splitca.cli._base" in graph
    )  # the walk saw the package
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
    error class are declared in its route table (``errors=``), the rest is http/app.py's one map."""
    for name in ("routes_ca", "routes_registrations"):
        tree = ast.parse((PKG / "http" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler):
                body = ast.unparse(ast.Module(body=node.body, type_ignores=[]))
                in_app_start = "splitca is not configured" in body  # before any route exists
                assert in_app_start or "Response" not in body, f"{name}.py:{node.lineno}: {body}"


def test_shared_x509_constants_are_defined_once_in_pki() -> None:
    """An OID the core and pki both compare against is one pki constant (``pki.SAN_OID``),
    not a module-level copy in each: no other module binds a name to it."""
    owners = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if value is not None and ast.unparse(value).endswith(".SUBJECT_ALTERNATIVE_NAME"):
                owners.append(path.relative_to(PKG).as_posix())
    assert owners == ["pki/names.py"], owners
