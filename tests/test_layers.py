"""The layers of docs/internals.md, checked on the source: imports point down, and no module imports
itself back through others (function-level imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Higher ranks may import lower ones; equal ranks are peers (see FORBIDDEN for peers kept apart).
# As DESIGN.md draws them: the pipeline above training and eval, and the generation layer (the
# sampling core all three use) below them.
RANKS = {
    "tld.errors": 0,
    "tld.common": 0,
    "tld.model": 1,
    "tld.diffusion": 1,
    "tld.data": 2,
    "tld.encoders": 2,
    "tld.adapters": 2,  # LoRA layers and adapter files: used by training (writes) and the pipeline (loads)
    "tld.generation": 3,
    "tld.preprocessing": 4,
    "tld.training": 4,
    "tld.eval": 4,
    "tld.pipeline": 5,
    "tld.recipes": 6,
    "tld.apps": 7,
    "tld.commands": 7,
    "tld.cli": 7,
    "tld": 7,
    "tld.__main__": 7,
}
FORBIDDEN = {
    "tld.model": {"tld.diffusion"},  # the network knows nothing about noise schedules
    "tld.diffusion": {"tld.model"},  # pure math on tensors
    "tld.pipeline": {"tld.training", "tld.eval", "tld.preprocessing"},
    "tld.preprocessing": {"tld.training", "tld.pipeline", "tld.eval", "tld.generation"},
}


def _module_files() -> dict[str, Path]:
    files = {}
    for base, prefix in ((ROOT / "tld", "tld"), (ROOT / "preprocessing", "tld.preprocessing")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        # Imports for type checkers only never run.
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            if base == "tld":  # the root package only re-exports TLDPipeline, lazily
                found.update(
                    "tld.pipeline" if a.name == "TLDPipeline" else f"tld.{a.name}" for a in node.names
                )
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs or {base})
    return {m for m in found if m in known or m.split(".")[0] == "tld"}


def _layer(module: str) -> str:
    if module.endswith(".__main__"):  # `python -m` entry points sit with the CLI
        return "tld.__main__"
    for length in (3, 2, 1):
        head = ".".join(module.split(".")[:length])
        if head in RANKS:
            return head
    raise AssertionError(f"{module} belongs to no layer of docs/internals.md; add it to RANKS")


def _graph() -> dict[str, set[str]]:
    files = _module_files()
    known = set(files)
    return {name: _imports(name, path, known) & known for name, path in files.items()}


def test_imports_point_down():
    wrong = []
    for module, targets in _graph().items():
        a = _layer(module)
        for target in targets:
            b = _layer(target)
            if a != b and (RANKS[b] > RANKS[a] or b in FORBIDDEN.get(a, ())):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "upward or forbidden imports: " + ", ".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its submodules is not a cycle of the code's logic.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_package_docstrings_name_every_module():
    """These packages' docstrings are their table of contents: each names every module it holds."""
    for package in (ROOT / "preprocessing", ROOT / "tld" / "generation"):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        missing = sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py" and p.name not in doc)
        assert not missing, f"{package.name}/__init__.py does not name {', '.join(missing)}"
