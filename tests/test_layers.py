"""The package's layers, enforced: Ray only in stages/ and train/, MLflow only in tracking.py, pure modules
never reach either (not even through another inetseg module), stage modules independent of each other."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "inetseg"
RAY_PACKAGES = ("inetseg.stages", "inetseg.train")  # Ray Data orchestration / Ray Train
TOP = ("inetseg.cli", "inetseg.pipeline", "inetseg.registry")  # may import anything (stage modules lazily)
MLFLOW = ("inetseg.tracking",)
MAX_LINES = 300


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """Every module an import statement anywhere in the file names (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return found


IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _third_party(name: str, lib: str) -> bool:
    return any(i == lib or i.startswith(lib + ".") for i in IMPORTS[name])


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _reach(name: str) -> set[str]:
    """inetseg modules `name` imports, transitively (a package's __init__ counts for its modules)."""
    seen, todo = set(), [name]
    while todo:
        for dep in IMPORTS[todo.pop()]:
            for mod in (dep, dep.rpartition(".")[0]):
                if mod in MODULES and mod not in seen:
                    seen.add(mod)
                    todo.append(mod)
    return seen


@pytest.mark.parametrize("name", sorted(MODULES))
def test_ray_only_in_stages_and_train(name: str) -> None:
    if not _in(name, RAY_PACKAGES):
        assert not _third_party(name, "ray"), f"{name} imports ray: Ray code belongs in inetseg/stages or inetseg/train"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_mlflow_only_in_tracking(name: str) -> None:
    if name not in MLFLOW:
        assert not _third_party(name, "mlflow"), f"{name} imports mlflow: only inetseg/tracking.py talks to MLflow"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not _in(n, RAY_PACKAGES + TOP + MLFLOW)))
def test_pure_modules_reach_no_ray(name: str) -> None:
    bad = sorted(m for m in _reach(name) if _third_party(m, "ray") or _third_party(m, "mlflow"))
    assert not bad, f"{name} is a pure module but imports {bad}, which import ray or mlflow"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("inetseg.stages.")))
def test_stages_do_not_import_each_other(name: str) -> None:
    others = sorted(i for i in IMPORTS[name] if i.startswith("inetseg.stages.") and i != "inetseg.stages.common")
    assert not others, f"{name} imports stage modules {others}: share code through a pure module or stages.common"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in(n, ("inetseg.train",))))
def test_train_does_not_import_stages(name: str) -> None:
    others = sorted(i for i in IMPORTS[name] if i.startswith("inetseg.stages") and i != "inetseg.stages.common")
    assert not others, f"{name} imports {others}: train/ sits below the stages"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}): split it by responsibility"


def test_the_checks_see_the_package() -> None:
    """Guards the guard: the scan finds the stage modules and sees their Ray imports."""
    assert "inetseg.stages.common" in MODULES and _third_party("inetseg.stages.common", "ray")
    assert _third_party("inetseg.tracking", "mlflow")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_torch_load_refuses_pickled_code(name: str) -> None:
    """torch.load(weights_only=True) everywhere: a model file from a run folder, a bucket or MLflow may come from
    anyone, and unpickling runs code."""
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            flags = {k.arg: k.value for k in node.keywords}
            assert "weights_only" in flags and ast.unparse(flags["weights_only"]) == "True", \
                f"{name}: {ast.unparse(node)} must pass weights_only=True"
