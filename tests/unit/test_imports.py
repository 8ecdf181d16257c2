"""The package's structure, read from its imports with `ast` (function-level imports
included): no import circle anywhere in argoctl/, and the agent never imports the
lab or the benchmarks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "argoctl"
OUTSIDE_AGENT = ("argoctl.lab", "argoctl.bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """argoctl modules `path` imports, resolved to modules (not names in them)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from argoctl import x`: x is a module if one exists by that name
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:          # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != me and t != "argoctl":
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def is_agent(module: str) -> bool:
    return not module.startswith(OUTSIDE_AGENT)


def test_the_walk_sees_the_package():
    g = graph()
    assert "argoctl.daemon" in g and "argoctl.lab.demo" in g and "argoctl.bench.cli" in g
    assert "argoctl.engine" in g["argoctl.daemon"]
    assert "argoctl.lab.loop" in g["argoctl.bench.failover"]


def test_no_import_circle_in_argoctl():
    assert cycles(graph()) == []


def test_the_agent_never_imports_lab_or_bench():
    bad = {m: sorted(t for t in deps if not is_agent(t))
           for m, deps in graph().items() if is_agent(m)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_walk_would_catch_a_circle_and_a_stray_import():
    g = graph()
    g["argoctl.config"] = g["argoctl.config"] | {"argoctl.daemon"}
    assert any("argoctl.config" in c and "argoctl.daemon" in c for c in cycles(g))
    assert not is_agent("argoctl.lab.topo") and is_agent("argoctl.fleet.bus")


def test_agent_commands_do_not_load_lab_or_bench():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom argoctl.cli import cli\n"
            "for cmd in ('validate', 'up', 'run', 'status', 'down'):\n"
            "    r = CliRunner().invoke(cli, [cmd, '--help']); assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in sys.modules if m.startswith(('argoctl.lab', 'argoctl.bench'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    listing = subprocess.run([sys.executable, "-m", "argoctl", "--help"], capture_output=True,
                             text=True, check=True).stdout
    assert all(f" {c} " in listing for c in ("bench", "demo", "lab", "validate"))


def test_no_module_is_over_about_600_lines():
    long = {m: n for m, p in modules().items()
            if (n := len(p.read_text().splitlines())) > 650}
    assert long == {}
