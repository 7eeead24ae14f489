"""The assignment's variants (assignment/variants.py): under all switches the unchanged public
reference loses at least half of every problem a switch touches, the switches' solution patches
score full marks (with P8's run, whose evaluation calls pass_at_k in the variant's order), each
new switch works alone, and a student id gives the same variant every time. The grading runs go
two at a time, in child processes (a few minutes in all)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_assignment import AUTOGRADED, ALL_SWITCHES, _copy_reference, _grade, _patch, _points

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "assignment"))
import make_student  # noqa: E402
import variants  # noqa: E402

AFFECTED = sorted({s["problem"] for s in variants.SWITCHES.values()})
ALONE = [16, 32, 64]      # the switches added last, each checked on its own too


def _tree(base: Path, name: str, switches: list[int], solved: bool) -> Path:
    tree = _copy_reference(base / name)
    for bit in switches if solved else []:
        for file, old, new in variants.SWITCHES[bit]["solution"]:
            _patch(tree, file, old, new)
    return tree


@pytest.fixture(scope="module")
def gradings(tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    pool = ThreadPoolExecutor(max_workers=2)

    def graded(name, variant, solved, problems):
        tree = _tree(base, name, variants.switches(variant), solved)
        return _grade(tree, tree / "results.json", problems, variant=variant)

    jobs = {"all-reference": pool.submit(graded, "all-reference", ALL_SWITCHES, False, ",".join(AFFECTED)),
            "all-solution": pool.submit(graded, "all-solution", ALL_SWITCHES, True, ",".join(AFFECTED + ["P8"]))}
    for bit in ALONE:
        problem = variants.SWITCHES[bit]["problem"]
        for solved in (False, True):
            jobs[(bit, solved)] = pool.submit(graded, f"{bit}-{solved}", bit, solved, problem)
    yield jobs
    pool.shutdown(wait=True)


def test_the_public_reference_loses_at_least_half_of_each_affected_problem(gradings):
    results = gradings["all-reference"].result()
    for pid in AFFECTED:
        earned, possible = _points(results, pid)
        assert possible == AUTOGRADED[pid] and earned <= possible / 2, (pid, results["table"])


def test_the_solution_of_all_switches_scores_full_marks(gradings):
    results = gradings["all-solution"].result()
    assert results["score"] == sum(AUTOGRADED[p] for p in AFFECTED + ["P8"]), results["table"]


@pytest.mark.parametrize("bit", ALONE)
def test_each_new_switch_alone_costs_the_reference_and_its_solution_passes(gradings, bit):
    problem = variants.SWITCHES[bit]["problem"]
    earned, possible = _points(gradings[(bit, False)].result(), problem)
    assert earned < possible, gradings[(bit, False)].result()["table"]
    earned, possible = _points(gradings[(bit, True)].result(), problem)
    assert earned == possible == AUTOGRADED[problem], gradings[(bit, True)].result()["table"]


@pytest.mark.parametrize("solved", [True, False])
def test_the_repository_tests_a_variant_patches_follow_its_convention(tmp_path, solved):
    """Switch 16's entropy tests, converted to read entropy.entropy as bits, pass on the switch's
    solution and fail on the released (nats) code: the student keeps them instead of losing them."""
    tree = _tree(tmp_path, "bits", [16], solved)
    for file, old, new in variants.SWITCHES[16]["tests"]:
        (tree / file).write_text(variants.substitute((tree / file).read_text(), old, new, file, every=True))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_entropy.py"],
                          cwd=tree, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (proc.returncode == 0) == solved, proc.stdout[-3000:]
    if not solved:
        assert proc.stdout.count("FAILED") >= 5, proc.stdout[-3000:]


def test_every_switch_names_its_problem_and_its_texts_apply(tmp_path):
    assert sorted(variants.SWITCHES) == [1 << i for i in range(len(variants.SWITCHES))]
    assert max(variants.VARIANTS) == ALL_SWITCHES == sum(variants.SWITCHES)
    dest = tmp_path / "all"
    make_student.make_student(dest, ALL_SWITCHES, snapshot=False)    # every docs text matches once
    assert "def pass_at_k(c: int, n: int, k: int)" in (dest / "grpo.py").read_text()
    assert "grpo.pass_at_k(c, n, k)" in (dest / "eval.py").read_text()
    assert "in BITS" in (dest / "entropy.py").read_text()
    ini = (dest / "pytest.ini").read_text()
    assert all(f"--deselect {n}" in ini for bit in ALONE for n in variants.SWITCHES[bit]["deselect"])


def test_a_student_id_gives_the_same_variant_every_time_and_varies_whole_problems():
    ids = [f"student{i:03d}@example.edu" for i in range(400)]
    drawn = [variants.from_student(i) for i in ids]
    assert drawn == [variants.from_student(i) for i in ids]                  # deterministic
    assert variants.from_student("alice") == variants.from_student(" alice\n") == 121   # fixed across machines
    assert set(drawn) == set(variants.DERIVED) and len(variants.DERIVED) == 11
    for v in drawn:       # each problem all or nothing (one switch alone does not halve it), two at least
        varied = [p for p, bits in variants.PROBLEM_SETS.items() if v & bits]
        assert len(varied) >= 2 and all(v & variants.PROBLEM_SETS[p] == variants.PROBLEM_SETS[p] for p in varied)
    for bits in variants.PROBLEM_SETS.values():                               # each problem varied for 7 in 11
        assert 0.5 < sum(v & bits > 0 for v in drawn) / len(drawn) < 0.75, bits


def test_variant_from_refuses_an_empty_id_and_a_second_variant(tmp_path, capsys):
    for argv in ([str(tmp_path / "a"), "--variant-from", " "],
                 [str(tmp_path / "b"), "--variant-from", "alice", "--variant", "3"]):
        with pytest.raises(SystemExit) as exit_:
            make_student.main(argv)
        assert exit_.value.code == 2
        assert "--variant" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_file_or_a_non_empty_folder_as_destination_is_one_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("y")
    for dest, words in ((tmp_path / "file", "is a file"), (tmp_path / "full", "is not empty")):
        assert make_student.main([str(dest)]) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1
    assert (tmp_path / "file").read_text() == "x" and os.listdir(tmp_path / "full") == ["kept"]
