"""The architecture checks itself: which top-level package may import which
(DESIGN.md's table), and no import cycle among the modules of a package.

Imports are read from the source (``ast``), every one of them: at module
level, inside functions and under ``TYPE_CHECKING`` alike — a lazy import
is still a dependency, and a typing-only one still couples the packages,
so the table counts them all.  The cycle check leaves out typing-only
imports: the pipeline's ``Exchange`` names each stage's state type in its
annotations (a newcomer reading it sees every field's type), which the
stages, importing the ``Exchange``, would otherwise make a cycle of a
module pair that never imports each other when the code runs.  A lazy
import inside a function still counts: it is a cycle deferred, not gone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages of ours it may import (itself always allowed)
ALLOWED: dict[str, frozenset[str]] = {
    "streams": frozenset(),
    "adapters": frozenset({"streams"}),
    "ingress": frozenset({"streams", "adapters"}),
    "processors": frozenset({"streams"}),
    "projections": frozenset({"streams"}),
    "hub": frozenset({"streams"}),
    "agent": frozenset({"streams", "adapters", "ingress"}),
    # the composition root wires everything together
    "nexus": frozenset({"streams", "adapters", "ingress", "processors", "projections", "hub", "agent"}),
}
OURS = frozenset(ALLOWED)


def modules(package: str) -> Iterator[tuple[str, Path]]:
    base = ROOT / package
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _typing_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = (
                test.id
                if isinstance(test, ast.Name)
                else test.attr
                if isinstance(test, ast.Attribute)
                else ""
            )
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    out.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return out


def imports(module: str, path: Path, *, typing: bool = True) -> Iterator[tuple[str, int]]:
    """Every module ``module`` imports (absolute names), with the line;
    without ``typing``, not those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    skip = set() if typing else _typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:
                # ``from pkg import module`` imports the module too
                yield f"{target}.{alias.name}", node.lineno


def test_every_package_imports_only_what_the_table_allows() -> None:
    wrong: list[str] = []
    for package, allowed in ALLOWED.items():
        for module, path in modules(package):
            for target, line in imports(module, path):
                top = target.split(".")[0]
                if top in OURS and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {package} imports {target}")
    assert not wrong, "imports against the dependency table (DESIGN.md):\n" + "\n".join(sorted(set(wrong)))


# Inside ingress, three layers, each importing only those below it: the
# front ends (the gateway's /v1 HTTP API, the proxy's decrypted flows) turn
# bytes into a request for the one pipeline; the pipeline's stages use the
# libraries (hooks, routing, caches, quotas, grammars, the upstream
# transport, the HTTP/1.1 layer), which know nothing of either.
FRONT_ENDS = frozenset({"gateway", "proxy"})
PIPELINE = frozenset({"pipeline"})


def _ingress_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_ingress_front_ends_stand_on_the_pipeline_and_libraries_on_nothing_above() -> None:
    wrong: list[str] = []
    for module, path in modules("ingress"):
        part = _ingress_part(module)
        for target, line in imports(module, path):
            if not target.startswith("ingress."):
                continue
            used = _ingress_part(target)
            if used == part or not used:
                continue
            if part in FRONT_ENDS and used in FRONT_ENDS:
                why = "a front end imports another front end"
            elif part in PIPELINE and used in FRONT_ENDS:
                why = "the pipeline imports a front end"
            elif part not in FRONT_ENDS | PIPELINE and used in FRONT_ENDS | PIPELINE:
                why = "a library imports the pipeline or a front end"
            else:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line}: {why} ({target})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_agent_runs_the_pipeline_not_a_front_end() -> None:
    """DESIGN.md: the agent imports the pipeline and hooks, not the
    gateway's HTTP front end (nor the proxy's)."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for module, path in modules("agent")
        for target, line in imports(module, path)
        if target.startswith("ingress.") and _ingress_part(target) in FRONT_ENDS
    ]
    assert not wrong, "\n".join(sorted(set(wrong)))


def _graph(package: str) -> dict[str, set[str]]:
    names = {m for m, _ in modules(package)}
    graph: dict[str, set[str]] = {m: set() for m in names}
    for module, path in modules(package):
        for target, _line in imports(module, path, typing=False):
            # the deepest of our modules the import names
            parts = target.split(".")
            while parts and ".".join(parts) not in names:
                parts.pop()
            hit = ".".join(parts)
            # a module importing its own package's __init__ is not an edge
            # worth a cycle (``from pkg import x`` resolves to pkg.x above)
            if hit and hit != module and not module.startswith(hit + "."):
                graph[module].add(hit)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_cycle_inside_a_package(package: str) -> None:
    cycles = _cycles(_graph(package))
    assert not cycles, f"import cycles in {package}:\n" + "\n".join(" <-> ".join(c) for c in cycles)
