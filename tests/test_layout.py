"""The package's shape, checked from its source: no import cycle, data flows one way (the
pipeline and models never import the sinks or the daemon; tracking feeds storage and messaging,
which never meet), the config imports no feature, and no module-level mutable state."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgedetect"
UPSTREAM = ("edgedetect.pipeline", "edgedetect.detect", "edgedetect.sources", "edgedetect.system")
DOWNSTREAM = ("edgedetect.sinks", "edgedetect.daemon", "edgedetect.extensions", "edgedetect.cli")
FEATURES = ("edgedetect.detect", "edgedetect.pipeline", "edgedetect.sources", "edgedetect.sinks",
            "edgedetect.tracking", "edgedetect.storage", "edgedetect.messaging")
# The event code by role -> what it never imports; only the events extension in sinks/ imports all three.
ROLES = {
    "edgedetect.tracking": ("edgedetect.storage", "edgedetect.messaging", "edgedetect.sinks"),
    "edgedetect.storage": ("edgedetect.messaging", "edgedetect.sinks"),
    "edgedetect.messaging": ("edgedetect.storage", "edgedetect.sinks"),
}
MUTABLE = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def modules() -> dict[str, ast.Module]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(p.read_text(encoding="utf-8"), str(p))
    return out


def top_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """edgedetect modules imported when the module is imported (not under TYPE_CHECKING, not in functions)."""
    deps: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("edgedetect"):
                deps.add(sub.module)
                deps.update(f"{sub.module}.{a.name}" for a in sub.names if f"{sub.module}.{a.name}" in known)
            elif isinstance(sub, ast.Import):
                deps.update(a.name for a in sub.names if a.name.startswith("edgedetect"))
    return {d for d in deps if d in known}


def test_no_import_cycle():
    mods = modules()
    graph = {name: top_level_imports(tree, set(mods)) - {name} for name, tree in mods.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert len(graph) > 50 and cycles == []


def _package(name: str, packages: set[str]) -> str | None:
    """The subpackage a module belongs to (edgedetect.detect for edgedetect.detect.model)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and ".".join(parts[:2]) in packages else None


def test_no_import_cycle_between_packages():
    """Module by module there may be no circle and still one between packages (detect importing
    the pipeline's frames while the pipeline imports detect's model): checked on the graph of
    subpackages, with imports inside functions counted too."""
    mods = modules()
    packages = {n for n in mods if n.count(".") == 1 and (PACKAGE / n.split(".")[1] / "__init__.py").exists()}
    graph: dict[str, set[str]] = {p: set() for p in packages}
    for name, tree in mods.items():
        src = _package(name, packages)
        if src is None:
            continue
        for dep in top_level_imports(tree, set(mods)) | _inner_imports(tree):
            dst = _package(dep, packages)
            if dst is not None and dst != src:
                graph[src].add(dst)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and not seen.add(n) and reaches(n, b, seen)) for n in graph[a])

    circles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a, set()))
    assert len(packages) >= 8 and circles == []


def test_data_flows_one_way():
    mods = modules()
    wrong = [(name, dep) for name, tree in mods.items() if name.startswith(UPSTREAM)
             for dep in top_level_imports(tree, set(mods)) | _inner_imports(tree) if dep.startswith(DOWNSTREAM)]
    assert wrong == []


def _inner_imports(tree: ast.Module) -> set[str]:
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            and n.module.startswith("edgedetect")}


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_event_roles_point_one_way():
    mods = modules()
    assert all(any(_within(name, (pkg,)) for name in mods) for pkg in ROLES)
    wrong = [(name, dep) for name, tree in mods.items() for pkg, banned in ROLES.items() if _within(name, (pkg,))
             for dep in top_level_imports(tree, set(mods)) | _inner_imports(tree) if _within(dep, banned)]
    assert wrong == []


def test_config_imports_no_feature():
    """The config is read before any feature is loaded, and every feature reads it."""
    mods = modules()
    tree = mods["edgedetect.config"]
    wrong = [dep for dep in top_level_imports(tree, set(mods)) | _inner_imports(tree) if _within(dep, FEATURES)]
    assert wrong == []


def test_no_module_level_mutable_state():
    """Module-level containers are constants (UPPER_CASE tables, read only); anything lowercase
    that holds a list, dict or set would be state shared by every pipeline in the process."""
    found = []
    for name, tree in modules().items():
        for node in tree.body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            value = node.value
            mutable = isinstance(value, MUTABLE) or (
                isinstance(value, ast.Call) and ast.unparse(value.func) in ("list", "dict", "set", "deque",
                                                                               "collections.deque", "defaultdict"))
            if mutable and any(n != "__all__" and not n.isupper() for n in names):
                found.append(f"{name}: {ast.unparse(node)[:60]}")
    assert found == []
