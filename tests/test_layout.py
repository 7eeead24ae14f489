"""The repository's layout: one file per concept, imports that go one way, and a README that
names every file (its "Layout" table) and a docs/methods.md that names every function it cites.

Layers, lowest first: a file imports only files of lower layers (never one of its own layer or
above), so there is no cycle and the concept files never import the scripts that use them.
This is the table of the README's "Layout" section.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
METHODS_PAGE = (REPO / "docs" / "methods.md").read_text()
LAYERS = [
    {"countdown", "datafile", "symbolic", "runlock", "command", "rundir", "bands"},   # task; files; grader; lock; plots
    {"rewards", "entropy", "policy", "memory", "distributed"},   # the grader, loading, costs, processes
    {"data", "rollout", "clipping", "grpo"},       # data sets (read the grader), batches, masks, the loss
    {"methods", "checkpoint", "tracking"},         # the method table, checkpoints, trackers
    {"config", "eval", "trl_clip", "lifecycle"},   # flags, presets; evaluation; the masks in TRL; the run's life
    {"train"},                                     # the loop
    {"bench_gpu", "plot", "build_tiny_model", "trl_example"},   # scripts around it
    {"bench", "bench_dist", "build_countdown_model"},   # benchmarks; the testbed's model builder
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}
FILES = sorted(p.stem for p in REPO.glob("*.py"))


def own_imports(name: str) -> set[str]:
    tree = ast.parse((REPO / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(FILES)


def test_every_file_has_a_layer():
    assert set(FILES) == set(LAYER)


def test_imports_only_go_down():
    for name in FILES:
        for imported in own_imports(name):
            assert LAYER[imported] < LAYER[name], f"{name}.py imports {imported}.py"


def test_readme_layout_names_every_file_and_every_file_opens_with_its_purpose():
    for name in FILES:
        assert f"`{name}.py`" in README, name
        assert ast.get_docstring(ast.parse((REPO / f"{name}.py").read_text())), name


def test_no_reference_to_documents_outside_the_repository():
    outside = re.compile(r"\b" + "DES" + r"IGN\b")   # the team's design notes are not shipped
    for path in [*REPO.glob("*.py"), *REPO.glob("tests/*.py"), REPO / "README.md",
                 *REPO.glob("docs/*.md")]:
        assert not outside.search(path.read_text()), path


def test_every_function_the_formula_table_names_exists():
    section = METHODS_PAGE.split("## Where each formula lives", 1)[1].split("\n## ", 1)[0]
    for module, function in re.findall(r"`(\w+)\.(\w+)`", section):
        source = ast.parse((REPO / f"{module}.py").read_text())
        names = {n.name for n in ast.walk(source) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert function in names, f"{module}.{function}"
