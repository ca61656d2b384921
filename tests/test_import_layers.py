"""Imports flow one way: every import of a whylearn module (module level and inside functions) goes down the layers.

Layers, bottom to top (``LAYERS``; a package or top-level module belongs to the first layer that names it):

0. foundation: ``loggers`` (the logging layer), ``optim``, ``reference``, ``conf``
1. ``data``, ``models``: datamodules and plain ``nn.Module``s
2. ``analysis``: the instruments (Hessian-vector products, landscapes, regions, kernels, dimensions,
   geometry, statistics, plotting helpers): pure computations on models, tensors and arrays
3. ``tasks``, ``callbacks``: LightningModules and the measurements made during a fit
4. ``studies``: post-hoc commands, multi-run studies (Kepler, the classic sweeps ...), run figures
5. ``runs``: the run lifecycle (folders and identity, resume and preemption, checkpoint loading, multiruns)
6. ``build``, ``config``: a composed config to objects, and its schema
7. ``experiment``: one run of an experiment, start to end (validate, run folder, fit and test, summary.json,
   figures, W&B, the report); above ``build`` and ``config``, which it uses
8. ``cli``: the console scripts

A module may import its own package and anything in a lower layer. Two packages of one layer do not
import each other (tasks and callbacks stay independent), and no package import graph has a cycle.
``whylearn/__init__.py`` only registers the config resolvers (``whylearn.runs.identity``, light).

A whylearn import inside a function must say why it is there: it defers a heavy import (Lightning,
matplotlib, torch) until it is needed, and a comment containing ``start-up`` on its line or in the
imports and comments right above it says so. Any other function-level import belongs at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "whylearn"

LAYERS: list[tuple[str, ...]] = [
    ("loggers", "optim", "reference", "conf"),
    ("data", "models"),
    ("analysis",),
    ("tasks", "callbacks"),
    ("studies",),
    ("runs",),
    ("build", "config"),
    ("experiment",),
    ("cli",),
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def whylearn_imports(path: Path, root: Path = SRC) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a whylearn module in ``path``."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] == "whylearn")
            elif isinstance(child, ast.ImportFrom):
                target = resolve(module, path.name == "__init__.py", child)
                if target.split(".")[0] == "whylearn":
                    for a in child.names:  # `from whylearn import build` imports the module whylearn.build
                        sub = f"{target}.{a.name}"
                        where = root.parent / Path(*sub.split("."))
                        is_module = where.with_suffix(".py").exists() or where.is_dir()
                        found.append((sub if is_module else target, child.lineno, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def unit(module: str) -> str | None:
    """The layer unit of a module: ``whylearn.tasks.base`` -> ``tasks``; None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def all_imports(root: Path = SRC) -> list[tuple[str, str, int, bool, Path]]:
    """(importing module, imported module, line, inside a function, file) for the package at ``root``."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        src = module_name(path, root)
        rows += [(src, dst, line, local, path) for dst, line, local in whylearn_imports(path, root)]
    return rows


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(LAYER) == set(), f"give these a layer in LAYERS: {sorted(units - set(LAYER))}"


def test_imports_go_down_the_layers():
    upward = []
    for src, dst, line, _, path in all_imports():
        a, b = unit(src), unit(dst)
        if a is None:  # whylearn/__init__.py: registers the resolvers
            assert dst == "whylearn.runs.identity", f"whylearn/__init__.py imports {dst}: keep `import whylearn` light"
            continue
        if b is None or a == b:
            continue
        if LAYER[b] >= LAYER[a]:
            upward.append(f"{path.relative_to(SRC.parent)}:{line}: {src} (layer {LAYER[a]}) imports {dst} (layer {LAYER[b]})")
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(upward)


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for src, dst, *_ in all_imports():
        a, b = unit(src), unit(dst)
        if a and b and a != b:
            graph.setdefault(a, set()).add(b)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(a for a in graph if a in reach(a))
    assert not cycles, f"packages that import themselves through others: {cycles} ({graph})"


def test_function_level_imports_say_why():
    silent = []
    for _, _, line, local, path in all_imports():
        if not local:
            continue
        lines = path.read_text().splitlines()
        said = "start-up" in lines[line - 1]
        above = line - 2  # or a comment in the group of imports and comments right above it
        while not said and above >= 0 and lines[above].strip().startswith(("#", "from ", "import ")):
            said = "start-up" in lines[above]
            above -= 1
        if not said:
            silent.append(f"{path.relative_to(SRC.parent)}:{line}: {lines[line - 1].strip()}")
    silent = list(dict.fromkeys(silent))
    assert not silent, ("whylearn imports inside functions belong at the top of the module unless they save start-up "
                        "time (then say so: `# start-up: ...`):\n" + "\n".join(silent))


@pytest.mark.parametrize("form", ["function", "module", "relative"])
def test_the_walker_sees_every_form_of_import(tmp_path, form):
    """An upward import written inside a function, at module level or relatively is found and mapped to its layer."""
    root = tmp_path / "whylearn"
    for pkg in ("", "data", "tasks"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "tasks" / "base.py").write_text("")
    body = {"function": "def f():\n    from whylearn.tasks import base\n",
            "module": "import whylearn.tasks.base\n",
            "relative": "from ..tasks import base\n"}[form]
    (root / "data" / "probe.py").write_text(body)
    rows = [r for r in all_imports(root) if r[0] == "whylearn.data.probe"]
    assert [(r[1], r[3]) for r in rows] == [("whylearn.tasks.base", form == "function")]
    assert LAYER[unit(rows[0][1])] > LAYER[unit(rows[0][0])]
