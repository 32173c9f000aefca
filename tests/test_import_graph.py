"""The package's layers import downwards only (core <- models, datasets <- engine <- analysis <- cli <- tools), the
core imports nothing from OpenMMLab, and no module imports itself back through others. Read from the
source with ``ast`` (imports inside functions included), so the rule holds for lazy imports too."""
import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / 'mmdyrep'
LAYER = {'core': 0, 'models': 1, 'datasets': 1, 'engine': 2, 'analysis': 3, 'cli': 4}
OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path) -> Set[str]:
    """Absolute names of everything ``path`` imports (``from x import y`` gives ``x`` and ``x.y``)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f'{base}.{a.name}' for a in node.names)
    return found


def graph() -> Dict[str, Set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob('*.py')}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer_of(module: str):
    parts = module.split('.')
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_layers_import_downwards_only():
    wrong = []
    for module, deps in graph().items():
        mine = layer_of(module)
        for dep in deps:
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f'{module} -> {dep}')
    assert not wrong, wrong


def test_core_is_pure_pytorch():
    for path in (PACKAGE / 'core').rglob('*.py'):
        bad = [m for m in imports_of(path) if m.split('.')[0] in OPENMMLAB]
        assert not bad, (path.name, bad)


def test_no_import_cycles():
    deps = graph()
    # a module's __init__ importing its own submodules is how packages work: leave those edges out
    edges = {m: {d for d in ds if not d.startswith(m + '.')} for m, ds in deps.items()}
    state: Dict[str, int] = {}
    cycles = []

    def visit(module, path):
        state[module] = 1
        for dep in edges[module]:
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in edges:
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """On a made-up package with a lazy upward import and a cycle, both checks fail."""
    fake = tmp_path / 'mmdyrep'
    for sub in ('core', 'engine'):
        (fake / sub).mkdir(parents=True)
        (fake / sub / '__init__.py').write_text('')
    (fake / '__init__.py').write_text('')
    (fake / 'core' / 'a.py').write_text('def f():\n    from ..engine import hook\n')
    (fake / 'engine' / 'hook.py').write_text('from mmdyrep.core import a\n')
    monkeypatch.setitem(globals(), 'PACKAGE', fake)
    for check in (test_layers_import_downwards_only, test_no_import_cycles):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f'{check.__name__} passed on a package that breaks it')
