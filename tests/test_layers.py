"""The import layers: a module imports only modules of its own layer or a lower one.

Every module under ``crawlsched/`` is parsed (AST, nothing is imported) and each of its
imports checked against ``LAYERS``. Imports under ``if TYPE_CHECKING:`` do not count (they
never run); imports inside functions do count for the layers (they run, just later), and
only module-level ones count for import cycles. The pure planning modules (``plan``,
``catchup``) may import no I/O at all, not even lazily.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "crawlsched"

#: The layer of each top-level module or package of crawlsched (a package's submodules share
#: its layer: ``web.api`` is ``web``). "__init__" is the ``crawlsched`` package itself.
#: A new module must be placed here: the test lists modules missing from the table.
LAYERS: dict[str, int] = {
    # 0 - vocabulary
    "__init__": 0, "errors": 0, "model": 0, "timing": 0, "durations": 0,
    # 1 - pure helpers over the vocabulary
    "validate": 1, "dsn": 1, "schedules": 1, "urls": 1, "jobfile": 1, "fasttoml": 1, "alike": 1, "tomledit": 1, "targets": 1, "procs": 1, "layout": 1,
    "clockjump": 1,
    # 2 - storage and the crawl itself (jobcache, jobread, safewrite: the job file's parse cache, reads and
    # atomic writes)
    "store": 2, "jobcache": 2, "jobread": 2, "safewrite": 2, "state": 2, "crawl": 2, "runfiles": 2,
    # 3 - what the loop, the CLI and the web are built from (duties, homelock, memory, outage, reloads,
    # reports, roles, scheduler, shutdown, signals, status, waker: pieces of the loop split out of daemon.py;
    # applying, leftovers: of scheduler.py)
    "executor": 3, "local_executor": 3, "pool": 3, "runner": 3, "plan": 3, "catchup": 3,
    "chains": 3, "recovery": 3, "history": 3, "retention": 3, "render": 3, "logs": 3, "logfile": 3, "journald": 3,
    "control": 3, "fires": 3, "watch": 3, "systemd": 3, "waker": 3, "duties": 3, "memory": 3,
    "reloads": 3, "status": 3, "listing": 3, "tables": 3, "scheduler": 3, "homelock": 3, "cluster": 3, "roster": 3,
    "outage": 3, "roles": 3, "signals": 3, "leftovers": 3, "shutdown": 3, "reports": 3, "applying": 3, "goaheads": 3, "foreground": 3,
    "workers": 3,  # executor = "workers": the queue, its executor, the worker process (imported lazily)
    # 4 - the loop
    "daemon": 4,
    # 5 - the faces
    "web": 5, "cli": 5, "demo": 5, "importer": 5, "__main__": 5,
}  # fmt: skip

#: Imports that break the table today, each (importer, imported) as full module names.
#: The restructure (issue 12) removes them; delete an entry when its import is gone
#: (``test_known_violations_are_still_real`` says when). Do not add to this list.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()  # none left (a run's names moved to crawl.runs)

#: Module-level import cycles that exist today, each as the sorted tuple of its modules.
KNOWN_CYCLES: set[tuple[str, ...]] = set()  # none left (cli's registration cycle went with the cli split)

#: Pure planning: no I/O at all. These modules (or packages) may import none of the
#: standard modules below, and of crawlsched only PURE_ALLOWED.
PURE = ("plan", "catchup")
IO_MODULES = frozenset({
    "sqlite3", "threading", "multiprocessing", "concurrent", "os", "socket", "select", "selectors",
    "signal", "fcntl", "subprocess", "time", "requests", "urllib", "http", "asyncio", "queue",
    "shutil", "tempfile", "pathlib", "io", "logging", "ctypes", "mmap", "glob", "pickle",
})  # fmt: skip
PURE_ALLOWED = frozenset({"__init__", "errors", "model", "timing", "validate", "plan", "catchup"})


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. crawlsched.web.api
    target: str  # the imported module, e.g. crawlsched.daemon, or "sqlite3"
    line: int
    module_level: bool  # False inside a function (it runs later, when called)


def module_name(path: Path, root: Path) -> str:
    """``crawlsched/web/api.py`` -> ``crawlsched.web.api``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import in ``source`` (the module ``name``), except those under ``if TYPE_CHECKING:``.

    ``from a.b import c`` names the module ``a.b.c`` when that is a module in ``known``,
    else ``a.b``. Relative imports are resolved against ``name``.
    """
    package = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []

    def resolve_from(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(nodes: list[ast.stmt], module_level: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(Import(name, a.name, node.lineno, module_level) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = resolve_from(node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(name, sub if sub in known else base, node.lineno, module_level))
            elif isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.orelse, module_level)  # the body never runs
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, False)
            elif isinstance(node, ast.ClassDef):
                visit(node.body, module_level)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        visit([c for c in children if isinstance(c, ast.stmt)], module_level)
                        for c in children:  # except handlers and match cases hold statements
                            if isinstance(c, (ast.ExceptHandler, ast.match_case)):
                                visit(c.body, module_level)

    visit(ast.parse(source).body, True)
    return found


def unit(module: str) -> str:
    """The key of ``LAYERS`` for a crawlsched module: its first name under ``crawlsched``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def crawlsched_imports(root: Path = PACKAGE) -> list[Import]:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    out: list[Import] = []
    for f in files:
        name = module_name(f, root)
        out.extend(imports_of(f.read_text(), name, f.name == "__init__.py", known))
    return out


def modules(root: Path = PACKAGE) -> set[str]:
    return {module_name(f, root) for f in root.rglob("*.py")}


def layer_violations(found: list[Import], layers: dict[str, int]) -> list[Import]:
    """Imports of a crawlsched module from a higher layer than the importer's."""
    return [i for i in found
            if i.target.split(".")[0] == "crawlsched" and unit(i.source) in layers and unit(i.target) in layers
            and layers[unit(i.target)] > layers[unit(i.source)]]


def impure_imports(found: list[Import], pure: tuple[str, ...] = PURE) -> list[Import]:
    """Imports of I/O (or of crawlsched modules outside PURE_ALLOWED) by the pure modules."""
    bad = []
    for i in found:
        if unit(i.source) not in pure:
            continue
        top = i.target.split(".")[0]
        if top == "crawlsched" and unit(i.target) not in PURE_ALLOWED or top in IO_MODULES:
            bad.append(i)
    return bad


def cycles(found: list[Import]) -> list[tuple[str, ...]]:
    """The strongly connected components (of more than one module, or a module importing
    itself) of the module-level import graph among crawlsched modules, each sorted."""
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(i.source, set())
        if i.module_level and i.target.split(".")[0] == "crawlsched" and i.target != i.source:
            graph[i.source].add(i.target)
            graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[tuple[str, ...]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def _describe(bad: list[Import]) -> str:
    return "\n".join(f"  {i.source} (line {i.line}) imports {i.target}" for i in bad)


# --- the tree as it is ------------------------------------------------------------------------


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in modules()} - set(LAYERS))
    assert not missing, f"place these modules in LAYERS of tests/test_layers.py: {missing}"


def test_no_module_imports_from_a_higher_layer():
    bad = [i for i in layer_violations(crawlsched_imports(), LAYERS) if (i.source, i.target) not in KNOWN_VIOLATIONS]
    assert not bad, "imports from a higher layer:\n" + _describe(bad)


def test_known_violations_are_still_real():
    real = {(i.source, i.target) for i in layer_violations(crawlsched_imports(), LAYERS)}
    gone = sorted(KNOWN_VIOLATIONS - real)
    assert not gone, f"these imports are gone: remove them from KNOWN_VIOLATIONS: {gone}"


def test_pure_planning_modules_import_no_io():
    bad = impure_imports(crawlsched_imports())
    assert not bad, "plan/catchup must stay pure (no I/O, no state):\n" + _describe(bad)


def test_no_import_cycles_among_modules():
    found = cycles(crawlsched_imports())
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "module-level import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in new)
    gone = sorted(KNOWN_CYCLES - set(found))
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


# --- the checker can fail -----------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "crawlsched"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_lower_layer_importing_a_higher_one(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "model.py": "from crawlsched.daemon import Daemon\n",
        "daemon.py": "from crawlsched import model\n",
        "web/__init__.py": "",
        "web/api.py": "from crawlsched.daemon import Daemon\nfrom ..model import Job\n",
        "state.py": "def later():\n    from crawlsched.render import table\n",
        "render.py": "",
        "timing.py": "try:\n    import crawlsched.cli.edit as edit\nexcept ImportError:\n    edit = None\n",
        "cli/__init__.py": "", "cli/edit.py": "from crawlsched.daemon import Daemon\n",
    })
    bad = layer_violations(crawlsched_imports(root), LAYERS)
    assert [(i.source, i.target, i.module_level) for i in bad] == [
        ("crawlsched.model", "crawlsched.daemon", True),
        ("crawlsched.state", "crawlsched.render", False),  # a lazy import is still an import
        ("crawlsched.timing", "crawlsched.cli.edit", True),  # a package's module has the package's layer
    ]


def test_checker_ignores_imports_under_type_checking(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "model.py": "from typing import TYPE_CHECKING\nimport typing\n"
                    "if TYPE_CHECKING:\n    from crawlsched.daemon import Daemon\n"
                    "if typing.TYPE_CHECKING:\n    import crawlsched.web\n"
                    "else:\n    from crawlsched import cli\n",
        "daemon.py": "", "cli.py": "", "web.py": "",
    })
    bad = layer_violations(crawlsched_imports(root), LAYERS)
    assert [(i.source, i.target) for i in bad] == [("crawlsched.model", "crawlsched.cli")]  # the else branch runs


def test_checker_lists_modules_missing_from_the_table(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "model.py": "", "brandnew.py": "", "newpkg/__init__.py": "",
                            "newpkg/part.py": ""})
    assert sorted({unit(m) for m in modules(root)} - set(LAYERS)) == ["brandnew", "newpkg"]


def test_checker_finds_io_in_the_pure_planning_modules(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "plan.py": "import heapq\nfrom dataclasses import dataclass\nfrom crawlsched.model import Job\n"
                   "def f():\n    import sqlite3\n    from crawlsched.state import State\n",
        "catchup.py": "import os.path\nfrom crawlsched import timing\n",
        "model.py": "", "state.py": "", "timing.py": "",
    })
    bad = impure_imports(crawlsched_imports(root))
    assert [(i.source, i.target) for i in bad] == [
        ("crawlsched.catchup", "os.path"), ("crawlsched.plan", "sqlite3"), ("crawlsched.plan", "crawlsched.state")]


def test_checker_finds_a_cycle_but_not_a_lazy_one(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "daemon.py": "from crawlsched import recovery\n",
        "recovery.py": "from crawlsched.daemon import Chain\n",
        "runner.py": "from crawlsched import state\n",
        "state.py": "def f():\n    from crawlsched import runner\n",
    })
    assert cycles(crawlsched_imports(root)) == [("crawlsched.daemon", "crawlsched.recovery")]


@pytest.mark.parametrize("source, expected", [
    ("from . import errors", "crawlsched.errors"),
    ("from .errors import InvalidValue", "crawlsched.errors"),
    ("from .. import model", "crawlsched.model"),
])
def test_checker_resolves_relative_imports(source, expected):
    known = {"crawlsched", "crawlsched.errors", "crawlsched.model", "crawlsched.web", "crawlsched.web.api"}
    name = "crawlsched" if source.startswith("from . ") or source.startswith("from .errors") else "crawlsched.web.api"
    [found] = imports_of(source + "\n", name, name == "crawlsched", known)
    assert found.target == expected
