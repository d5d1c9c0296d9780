"""The package's shape: no import cycles, backends independent of the stage runner, and the
strategy registry as the one source of the experiment's allowed values."""

import ast
from pathlib import Path

import pytest

from hypertweaks.config import ConfigError, make_experiment
from hypertweaks.strategies import STARTS
from hypertweaks.strategies.finals import FINALS
from hypertweaks.strategies.names import (
    FINAL_NAMES,
    PRUNER_NAMES,
    SAMPLER_NAMES,
    SELECTOR_NAMES,
    START_NAMES,
)
from hypertweaks.strategies.pruners import PRUNERS
from hypertweaks.strategies.samplers import SAMPLERS
from hypertweaks.strategies.selectors import SELECTORS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hypertweaks"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module's imports of other hypertweaks modules, lazy (in-function) ones included;
    imports only for type checkers are left out."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in ast.walk(node)
        }
        found = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        # a package's __init__ is imported with any of its modules: not an edge of its own
        graph[name] = {t for t in found if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(imports()) is None, " -> ".join(find_cycle(imports()))


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_backends_run_trials_through_trial_and_never_import_the_stage_runner():
    graph = imports()
    for backend in ("hypertweaks.backends.embedded", "hypertweaks.backends.ray_tune"):
        assert "hypertweaks.search" not in graph[backend]
        assert "hypertweaks.trial" in graph[backend]


def test_the_names_config_reads_are_the_registries_keys():
    assert SAMPLER_NAMES == tuple(SAMPLERS) and PRUNER_NAMES == tuple(PRUNERS)
    assert SELECTOR_NAMES == tuple(SELECTORS) and START_NAMES == tuple(STARTS)
    assert FINAL_NAMES == tuple(FINALS)


def test_config_holds_strategy_names_and_never_imports_optuna():
    graph = imports()
    reached, todo = set(), ["hypertweaks.config"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.get(module, ()))
    for module in reached:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name.split(".")[0] == "optuna" for name in names), module


@pytest.mark.parametrize(
    "field, registry",
    [("sampler", SAMPLERS), ("pruner", PRUNERS), ("selector", SELECTORS), ("final_model", FINALS)],
)
def test_allowed_strategy_values_come_from_the_registry(field, registry, text_experiment):
    from hypertweaks.kinds import KINDS

    taken = {name for kind in KINDS.values() for name in kind.finals}
    for name in registry:
        if field == "final_model" and name not in KINDS[text_experiment["task"]].finals:
            assert name in taken  # another kind's rule (refit: images)
            continue
        assert getattr(make_experiment({**text_experiment, field: name}), field) == name
    with pytest.raises(ConfigError, match=f"{field}: must be one of {', '.join(registry)}"):
        make_experiment({**text_experiment, field: "simulated-annealing"})


def test_the_stage_order_is_the_runners_alone():
    """Backends open the study and run its trials; the smoke run, a trial on a subset, is a
    stage of the runner (search.py), run between them."""
    for backend in ("backends/embedded.py", "backends/ray_tune.py"):
        assert "smoke" not in (PACKAGE / backend).read_text(), backend
    runner = (PACKAGE / "search.py").read_text()
    assert runner.index("backend.open()") < runner.index("self.smoke()")
    assert runner.index("self.smoke()") < runner.index("backend.optimize()")
