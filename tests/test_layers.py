"""The import-layer contract: the package's modules import downward only, and no two of them import each other.

Every `import` counts, at module level or inside a function (a cycle hidden behind a local import is still a
cycle); only `if TYPE_CHECKING:` blocks are left out, since they never run. A new module must be given a layer
here; the README's layout section and docs/development.md draw the same layers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyramidal"

# Top-level unit (a module, or a subpackage as a whole) -> layer. A module imports only from its own layer or
# lower ones; within a layer, the no-cycle test keeps the direction.
LAYERS = {
    # 0: the base. `pyramidal` itself only holds __version__ at import: its public names load on first use
    # (importlib, from __getattr__), so importing it from below is no upward import.
    "pyramidal": 0, "errors": 0, "registry": 0, "lazy": 0, "io": 0, "progress": 0, "device": 0,
    "fastpath": 0, "onnx_backend": 0, "figures": 0, "options": 0, "pixels": 0,
    # 1: architectures (fresh weights only), damage tasks, data loaders, the one training step, the scores and
    # the classical methods they are compared with
    "models": 1, "damage": 1, "camera": 1, "data": 1, "gpudata": 1, "step": 1, "metrics": 1, "baselines": 1,
    # 2: the files of a run: weights and checkpoints, configuration, RNG/EMA/lock/logs
    "checkpoint": 2, "config": 2, "configfiles": 2, "configcheck": 2, "runstate": 2,
    # 3: the hub: built-in weights, create_model(pretrained=), recipe lookup
    "hub": 3,
    # 4: compute: inference, training, evaluation and what is built on them
    "inference": 4, "train": 4, "evaluate": 4, "export": 4, "bench": 4, "benchmark": 4, "gradients": 4,
    "recipe": 4, "realnoise": 4, "compare": 4, "demo": 4,
    # 5: the faces
    "api": 5, "cli": 5, "web": 5, "__main__": 5,
}

# The modules `pyramidal --help` (and every `pyramidal COMMAND --help`) imports. At module level they import no
# torch and no package module outside this list: they reach the rest of the package (hub, inference, train,
# web, ...) only inside the functions that run a command. Those function-local imports are the ones that
# serve the torch-free `--help`; tests/test_cli.py checks the same at run time.
TORCH_FREE = {"pyramidal", "errors", "registry", "lazy", "device", "options", "camera", "damage", "config",
              "configfiles", "configcheck", "compare", "__main__", "cli", "cli.common", "cli.bench", "cli.compare",
              "cli.degrade", "cli.demo", "cli.evaluate", "cli.export", "cli.gradients", "cli.models", "cli.restore",
              "cli.serve", "cli.train", "cli.weights"}


def unit(module: str) -> str:
    """pyramidal.models.dense -> models; pyramidal -> pyramidal."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported pyramidal module, at module level) for each import in `path`, TYPE_CHECKING left out."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == "pyramidal":
                    # `from pyramidal import models` imports the module pyramidal.models
                    targets = [f"{base}.{a.name}" if base == "pyramidal" and a.name in LAYERS else base
                               for a in child.names]
                    found.extend((child.lineno, t, top) for t in targets)
            elif isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, top) for a in child.names if a.name.split(".")[0] == "pyramidal")
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def package_edges() -> list[tuple[str, int, str, str, bool]]:
    """(file, line, importing module, imported module, at module level) over the whole package."""
    return [(str(p.relative_to(PACKAGE.parent)), line, module_name(p), target, top)
            for p in sorted(PACKAGE.rglob("*.py")) for line, target, top in imports(p)]


def test_every_module_has_a_layer():
    units = {unit(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set(), "give each new module a layer in tests/test_layers.py"
    assert set(LAYERS) - units == set(), "a module in LAYERS no longer exists"


def test_every_command_module_is_torch_free():
    commands = {module_name(p).removeprefix("pyramidal.") for p in (PACKAGE / "cli").glob("*.py")}
    assert commands <= TORCH_FREE


def test_imports_go_downward_only():
    upward = [f"{file}:{line}: {src} (layer {LAYERS[unit(src)]}) imports {dst} (layer {LAYERS[unit(dst)]})"
              for file, line, src, dst, _ in package_edges() if LAYERS[unit(dst)] > LAYERS[unit(src)]]
    assert upward == []


def test_no_import_cycles():
    """Tarjan's strongly connected components over the units; a component of two or more is a cycle."""
    graph: dict[str, set[str]] = {u: set() for u in LAYERS}
    for _, _, src, dst, _ in package_edges():
        if unit(src) != unit(dst):
            graph[unit(src)].add(unit(dst))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(TORCH_FREE))
def test_help_path_imports_no_torch_at_module_level(module):
    """The modules `pyramidal --help` loads import torch, and the package modules that import it, only lazily."""
    candidates = ([PACKAGE / "__init__.py"] if module == "pyramidal" else
                  [PACKAGE / f"{module.replace('.', '/')}.py", PACKAGE / module.replace(".", "/") / "__init__.py"])
    path = next(p for p in candidates if p.is_file())
    tree = ast.parse(path.read_text(encoding="utf-8"))
    heavy = []
    for node in tree.body:  # module level only: imports inside functions are the lazy ones
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        for name in names:
            if name.split(".")[0] in ("torch", "torchvision"):
                heavy.append(f"line {node.lineno}: {name}")
            elif name.startswith("pyramidal.") and name.partition(".")[2] not in TORCH_FREE:
                heavy.append(f"line {node.lineno}: {name} (not on the torch-free list)")
    assert heavy == []


def _lazy_reason(lines: list[str], import_lines: set[int], line: int, end: int) -> bool:
    """A `# lazy: <reason>` comment on the import, or above it across the block of imports it stands in."""
    if any("# lazy:" in lines[n - 1] for n in range(line, end + 1)):
        return True
    n = line - 1
    while n >= 1 and (n in import_lines or not lines[n - 1].strip() or lines[n - 1].strip().startswith("#")):
        if "# lazy:" in lines[n - 1]:
            return True
        n -= 1
    return False


def test_function_local_imports_serve_the_torch_free_help_and_say_so():
    """Inside a function, a module imports the package's own modules only to keep torch out of `--help` (it is on
    the torch-free list), and says so in a `# lazy: <reason>` comment on the import or its block of imports."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = path.read_text(encoding="utf-8").splitlines()
        spans = {n.lineno: n.end_lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
        import_lines = {n for start, end in spans.items() for n in range(start, end + 1)}
        for line, target, top in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
            if top:
                continue
            if name.removeprefix("pyramidal.") not in TORCH_FREE and name != "pyramidal":
                bad.append(f"{where}: import it at module level ({name} is not on the --help path)")
            elif not _lazy_reason(lines, import_lines, line, spans[line]):
                bad.append(f"{where}: say why in a `# lazy: <reason>` comment")
    assert sorted(set(bad)) == []


def test_the_docs_draw_the_layers_as_they_are():
    """docs/development.md's layer table holds LAYERS exactly; the README's layout names every unit in its layer."""
    root = PACKAGE.parent
    table: dict[str, int] = {}
    for row in re.findall(r"^\| (\d) \| (.+?) \|", (root / "docs" / "development.md").read_text(encoding="utf-8"), re.M):
        names = re.findall(r"`([\w.]+)/?`", re.sub(r"\(`[^)]*`\)", "", row[1]))
        table.update((name, int(row[0])) for name in names)
    assert table == LAYERS
    layout = (root / "README.md").read_text(encoding="utf-8").split("\npyramidal/\n", 1)[1].split("```", 1)[0]
    drawn: dict[str, int] = {}
    layer = None
    for line in layout.splitlines():
        if m := re.match(r"  (\d) ", line):
            layer = int(m.group(1))
        if layer is not None:
            for name in re.findall(r"(?<![\w.])(\w+)(?:\.py|/)", line):
                drawn.setdefault(name, layer)
    missing = {u: n for u, n in LAYERS.items() if u not in ("pyramidal", "__main__") and drawn.get(u) != n}
    assert missing == {}, "draw these units in their layer in the README's layout"
