"""The README's commands exist: every `python SCRIPT.py` it names answers --help, and every file
and figure it links to is in the repository."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
SCRIPTS = sorted(set(re.findall(r"python ([\w]+\.py)", README)))


def test_readme_names_the_main_scripts():
    assert {"train.py", "eval.py", "plot.py", "bench.py"} <= set(SCRIPTS)
    assert "python -m pytest" in README


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_named_in_the_readme_answers_help(script):
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_linked_files_exist():
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (REPO / link).is_file(), link


def test_experiments_script_rejects_an_unknown_experiment():
    result = subprocess.run(["bash", "experiments.sh", "nonsense"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "unknown experiment" in result.stderr
