"""The walkthrough notebook, notebooks/walkthrough.ipynb: it runs from top to bottom in a Jupyter
kernel of this interpreter and what it computes is right (Theorems 1 and 2 with errors that
shrink as the step squared, the four cases, Corollary 1 on the shipped model, two short runs
that wrote their metrics); the committed copy is executed, error-free and small; it imports
the repository's functions rather than redefining them.

The notebook is executed with nbclient on an in-memory copy, so the committed outputs are left
alone, with the repository root as its working directory (the committed outputs were made from
notebooks/, where Jupyter starts it, so both places are covered); its training runs go to a
temporary folder (WALKTHROUGH_RUNS). It takes as long as the notebook itself, about a minute
on 2 cores.
"""

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
MAX_BYTES = 400_000   # figures at modest dpi, no widget state: the file renders quickly on the code host

# printed by a cell appended to the executed copy: the values the notebook computed
REPORT = """
import json, sys
print(json.dumps({
    "executable": sys.executable,
    "theorem1": THEOREM1_RATIOS, "theorem2": THEOREM2_RATIOS,
    "four_cases": FOUR_CASES_AGREEMENT, "batch_mean_over_std": BATCH_MEAN_OVER_STD,
    "removed_b": int(removed_b.sum()), "removed_v": int(removed_v.sum()),
    "steps": int(FLAGS[FLAGS.index("--steps") + 1]),
    "runs": {label: {"steps": [r["step"] for r in recs], "masked": [r["masked_frac"] for r in recs],
                     "entropy": [r["entropy"] for r in recs]} for label, recs in records.items()},
}))
"""


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict:
    """Run the notebook in a kernel of this interpreter and return what REPORT printed."""
    tmp = tmp_path_factory.mktemp("notebook")
    # A "python3" kernelspec that runs exactly this interpreter, found before any other one
    # (JUPYTER_PATH comes first), so the kernel is this virtual environment's Python.
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        env.setenv("WALKTHROUGH_RUNS", str(tmp / "runs"))
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(REPORT))
        client = NotebookClient(nb, kernel_name="python3", timeout=600, startup_timeout=180,
                                resources={"metadata": {"path": str(ROOT)}})
        client.execute()   # raises CellExecutionError, with the cell and its traceback, on any error
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return json.loads(printed)


def test_runs_in_a_kernel_of_this_interpreter(executed):
    assert Path(executed["executable"]).resolve() == Path(sys.executable).resolve()


def test_first_order_theorems_hold_to_second_order(executed):
    # halving the step divides the error of a first-order formula by 4 (by 2 if it were wrong)
    for name in ("theorem1", "theorem2"):
        assert executed[name] and all(3.5 < r < 4.5 for r in executed[name]), (name, executed[name])
    assert executed["four_cases"] > 0.95


def test_shipped_model_batch_and_masks(executed):
    # Corollary 1 on the model: on-policy, S* - E[S] has a batch mean far inside its spread
    assert abs(executed["batch_mean_over_std"]) < 0.2
    assert executed["removed_b"] > 0 and executed["removed_v"] > 0


def test_short_runs_logged_every_step(executed):
    runs = executed["runs"]
    assert set(runs) == {"grpo", "clipv mu=1.0"}
    for label, run in runs.items():
        assert run["steps"] == list(range(1, executed["steps"] + 1)), label
        assert all(0 < h < 5 for h in run["entropy"]), label
    assert all(m == 0 for m in runs["grpo"]["masked"])
    assert any(m > 0 for m in runs["clipv mu=1.0"]["masked"])


def test_committed_copy_is_executed_error_free_and_small():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert 15 <= len(nb.cells) <= 30
    assert all(c.execution_count is not None for c in cells), "commit the notebook executed"
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.outputs)
    assert "widgets" not in nb.metadata
    assert NOTEBOOK.stat().st_size < MAX_BYTES, NOTEBOOK.stat().st_size


def test_imports_the_repository_functions_rather_than_copying_them():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(c.source for c in _code_cells(nb))
    defined = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
    repository = set()
    for path in ROOT.glob("*.py"):
        tree = ast.parse(path.read_text())
        repository |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert not defined & repository, defined & repository
