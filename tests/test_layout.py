"""The package's folders are the data flow: no subpackage imports one above it, and no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "squad_qa"
# files -> data -> model -> spans -> scoring; training and inference both sit on top, apart.
RANK = {"files": 0, "data": 1, "model": 2, "spans": 3, "scoring": 4, "training": 5, "inference": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The squad_qa modules ``path`` imports (inside functions too, unless ``top_level_only``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("squad_qa.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("squad_qa"):
            if node.module == "squad_qa":  # from squad_qa import x: a submodule, or a name of the root
                found |= {f"squad_qa.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"
    return found


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_root_holds_only_init_and_cli_beside_the_subpackages():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "cli.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(RANK)


def test_no_subpackage_imports_one_above_it_in_the_flow():
    wrong = []
    for module, path in MODULES.items():
        here = subpackage(module)
        if here is None:  # the root (__init__, cli) is above everything
            continue
        for target in imports(path):
            there = subpackage(target)
            if there is None:
                wrong.append(f"{module} imports the package root ({target})")
            elif there != here and RANK[there] >= RANK[here]:
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = {m: {t for t in imports(p, top_level_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, "import cycle: " + " -> ".join(trail + [m])
        state[m] = 1
        for t in graph[m]:
            visit(t, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_the_training_flags_depend_on_no_other_training_module():
    """config.py owns the flags' names, choices and defaults: every training module may read it, so it reads
    none of them (the checks that need them live in checks.py and the modules each flag serves)."""
    assert not {t for t in imports(MODULES["squad_qa.training.config"]) if t.startswith("squad_qa.training")}
    assert not imports(MODULES["squad_qa.training.config"]) - {"squad_qa.data.windows"}


def test_no_module_is_over_450_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_the_names_the_readme_shows_import_from_the_root():
    import squad_qa

    assert squad_qa.QAReader.__module__ == "squad_qa.inference.reader"
    assert squad_qa.QAItem and squad_qa.Answer
