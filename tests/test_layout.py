"""The package's layers, checked by walking every module's imports (ast): imports run one way, no module imports a
private name of another, and the public API is what the README shows."""

import ast
from pathlib import Path

import pytest

import imagegen

SRC = Path(imagegen.__file__).parent
# Lower layers first; a module may import from its own layer's package and from any layer listed before it.
# errors <- utils (device, progress, atomic writes, locks) <- config, pixels, artifacts <- data <- models <- methods
# <- sampling <- metrics <- train | explain <- report <- sweep <- serve <- cli
LAYERS = [
    {"errors", "interrupts"},  # interrupts: a Ctrl-C remembered from the first line of `python -m imagegen`
    {"utils"},
    {"config", "pixels", "artifacts"},
    {"data"},
    {"models"},
    {"methods"},
    {"sampling"},
    {"metrics"},
    {"train", "explain"},  # siblings: neither imports the other
    {"report"},
    {"sweep"},  # imagegen sweep: trials are train's runs, its pictures report's
    {"serve"},  # the studio: `imagegen serve` (cli) starts it
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def top(module: str) -> str:
    """The layer a module belongs to: its first component below `imagegen`."""
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported imagegen module, names, line) for every import of an imagegen module in `path`."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]  # a module's package, and a package's own __init__ likewise
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "imagegen":
                found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "imagegen"]
    return found


def modules():
    return list(SRC.rglob("*.py"))


def test_imports_run_one_way():
    wrong = []
    for path in modules():
        me = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        mine = top(me)
        if mine == "__init__":
            continue  # the package's lazy public API may name any layer
        for target, names, line in imports(path):
            theirs = top(target)
            if theirs == "__init__" and names == ["__version__"]:
                continue
            if theirs == mine:
                continue
            if RANK.get(theirs, 99) >= RANK[mine]:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports that run upward or sideways:\n" + "\n".join(wrong)


def test_every_module_belongs_to_a_layer():
    layers = {top(".".join(p.relative_to(SRC.parent).with_suffix("").parts)) for p in modules()}
    assert layers - {"__init__"} <= set(RANK), sorted(layers - set(RANK) - {"__init__"})


def test_no_module_imports_a_private_name_of_another():
    wrong = [f"{p.relative_to(SRC)}:{line} imports {name} from {target}"
             for p in modules() for target, names, line in imports(p) for name in names
             if name.startswith("_") and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_the_layer_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a metrics module importing train is reported, a train module importing metrics is not."""
    global SRC
    pkg = tmp_path / "imagegen"
    for rel, text in (("metrics/bad.py", "from ..train import loop\n"), ("train/good.py", "from ..metrics import x\n")):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    old, SRC = SRC, pkg
    try:
        with pytest.raises(AssertionError) as caught:
            test_imports_run_one_way()
        assert "metrics/bad.py" in str(caught.value) and "train/good.py" not in str(caught.value)
    finally:
        SRC = old


def test_public_api_is_what_the_readme_shows():
    import imagegen.train.loop

    for name in imagegen.__all__:
        assert getattr(imagegen, name) is not None, name
        assert name == "__version__" or not isinstance(getattr(imagegen, name), type(imagegen)), f"{name} is a module"
    assert imagegen.generate.__module__ == "imagegen.sampling.generator"
    assert imagegen.train_generator is imagegen.train.loop.train


def import_graph(src: Path) -> dict[str, set[str]]:
    """module -> the imagegen modules it imports (function-level imports included; `from .pkg import module`
    counts as importing that module)."""
    graph = {}
    for path in src.rglob("*.py"):
        me = ".".join(path.relative_to(src.parent).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for target, names, _ in imports(path):
            for name in names or [""]:
                sub = f"{target}.{name}"
                targets.add(sub if (src.parent / Path(*sub.split("."))).with_suffix(".py").is_file() else target)
        graph[me] = targets - {me, "imagegen"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as a list of nodes (first == last), or [] (depth-first search)."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str]:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done and (found := visit(node, [node])):
            return found
    return []


def test_no_import_cycles_between_modules():
    """A cycle is a sign that two modules are one concern, or that a helper sits in the wrong one."""
    cycle = find_cycle(import_graph(SRC))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
