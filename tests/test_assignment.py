"""The course assignment (assignment/) does not rot: the student version is generated, imports,
collects, fails every graded test with NotImplementedError and grades 0; the reference grades
full marks; planted bugs (mutants of the reference) each lose points in their own problem; a
variant's student version states its conventions (tests/test_assignment_variants.py grades the
variants); the handout's ids
and points are the manifest's; the student version holds no removed body; the handout's
experiment command runs. The grading runs go two at a time, in child processes."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "assignment"))
import make_student  # noqa: E402
import manifest  # noqa: E402
import variants  # noqa: E402

HANDOUT = (REPO / "assignment" / "HANDOUT.md").read_text()
SUBMITTED = sorted({spec.split(":")[0] + ".py" for p in manifest.PROBLEMS for spec in p["functions"]})
ALL_SWITCHES = max(variants.VARIANTS)
AUTOGRADED = {p["id"]: sum(points for points, _ in p["tests"].values()) for p in manifest.PROBLEMS}

# (problem, file, reference text, planted bug, what the bug is)
MUTANTS = [
    ("P1", "entropy.py", "return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)",
     "return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1) / math.log(2)",
     "entropy in bits (log base 2)"),
    ("P1", "grpo.py", "mask.sum() if num_tokens is None", "mask.numel() if num_tokens is None",
     "token-mean averaged over the padding too"),
    ("P2", "grpo.py", "r.mean(-1, keepdim=True), r.std(-1, keepdim=True)",
     "r.mean(-1, keepdim=True), r.std(-1, keepdim=True, correction=0)", "advantages with the population std"),
    ("P3", "entropy.py", "return logp_k.exp() * (h + logp_k)", "return h + logp_k", "S* without its pi_k factor"),
    ("P4", "entropy.py", "return (p * p * (h.unsqueeze(-1) + logp)).sum(-1)",
     "return (p * (h.unsqueeze(-1) + logp)).sum(-1)", "E[S] with pi_i instead of pi_i^2"),
    ("P5", "clipping.py", "_discriminator_clip(s_star.double() - center, sigma,",
     "_discriminator_clip(s_star.double(), sigma,",
     "Clip-B's deviation not centred on the batch mean (Clip-V's convention)"),
    ("P5", "clipping.py", "(d < -mu * sigma)", "(d < mu * sigma)", "the lower rule's sign flipped"),
    ("P6", "grpo.py", "return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))",
     "return 1.0 - (1.0 - c / n) ** k", "the biased pass@k 1 - (1 - c/n)^k"),
    ("P7", "entropy.py", "        n = hidden.shape[0]\n", "        n = hidden.shape[0]\n        chunk_size = n\n",
     "all T x V logits at once (values right, memory not bounded)"),
    # wrong code students write that passed once: each must lose points too
    ("P3", "entropy.py", "return logp_k.exp() * (h + logp_k)", "return logp_k.exp() * (h.mean() + logp_k)",
     "S* with the batch-mean entropy instead of each position's"),
    ("P1", "grpo.py", "return kept.sum() / (token_loss.shape[-1] if max_len is None else max_len)",
     "return (token_loss * mask).sum() / (token_loss.shape[-1] if max_len is None else max_len)",
     "seq-mean-token-sum-norm masking by multiplication (NaN padding leaks)"),
    ("P1", "grpo.py", "seq_loss = kept.sum(-1) / seq_count.clamp(min=1)",
     "seq_loss = (token_loss * mask).sum(-1) / seq_count.clamp(min=1)",
     "seq-mean-token-mean masking by multiplication (NaN padding leaks)"),
    ("P6", "grpo.py", "return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))",
     "return 1.0 - math.comb(n - c, k) / math.comb(n, k)", "pass@k with binomials (the handout forbids them)"),
    ("P2", "grpo.py", "return torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))",
     "return torch.exp(logp - old_logp)", "the ratio without the log-ratio clamp"),
    ("P2", "grpo.py", "torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)",
     "torch.where(adv < 0, torch.maximum(loss, -dual_clip * adv), loss)", "the dual-clip bound as a maximum"),
    ("P3", "entropy.py", "return -eps * s_star(logits, _as_ids(logits, k))",
     "return eps * s_star(logits, _as_ids(logits, k))", "Theorem 1 with its sign flipped"),
    ("P3", "entropy.py", "return -eps * s_star(logits, _as_ids(logits, k))",
     "return -eps * s_star(logits.float(), _as_ids(logits, k))", "Theorem 1 in float32"),
]
# what the failing row must say, for the mutants whose cause a message can name
SAYS = {"Theorem 1 with its sign flipped": "sign is flipped", "Theorem 1 in float32": "float32",
        "the dual-clip bound as a maximum": "at index", "pass@k with binomials (the handout forbids them)": "binomials"}
# right code that must keep every point
HARMLESS = [("P1", "entropy.py", "return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)",
             "return -(logp.exp() * (logp.exp() + 1e-12).log()).sum(-1)", "-(p log(p + 1e-12))")]


# Forged submissions: stub files (or, for "cache", the reference answering only the inputs it saw
# in a public run) plus code that attacks the grade instead of earning it.
FORGE_HOOKS = """
import atexit, json, os, sys, time
from pathlib import Path

def _forge():
    perfect = {"score": 64.0, "output": "forged", "tests": [{"name": "all", "score": 64.0, "max_score": 64}]}
    for path in (RESULTS, *Path.cwd().rglob("report*.jsonl")):
        Path(path).write_text(json.dumps(perfect))

_forge()                                   # over the results path at import
atexit.register(_forge)                    # and again at exit
if os.fork() == 0:                         # and from a child, until the grader is long done
    for _ in range(600):
        _forge()
        time.sleep(0.1)
    os._exit(0)
import _pytest.reports                     # patch pytest: every report passes
_pytest.reports.TestReport.passed = property(lambda self: True)
for module in list(sys.modules.values()):  # patch the harness, wherever it is loaded
    if isinstance(getattr(module, "RECORDS", None), list):
        module.RECORDS[:] = []
sys.path.insert(0, "assignment/tests")
import harness
harness.RECORDS.append({"nodeid": "x", "event": "result", "outcome": "passed"})
"""

CACHE = """
import hashlib, os, pathlib, torch

def _key(args, kwargs):
    flat = [(str(a.dtype), a.tolist()) if isinstance(a, torch.Tensor) else a for a in args]
    return hashlib.sha1(repr((flat, sorted(kwargs.items()))).encode()).hexdigest()

def _replay(fn, table=pathlib.Path(TABLE)):
    def inner(*args, **kwargs):
        key = _key(args, kwargs)
        if os.environ.get("CHEAT_RECORD"):          # the public run: remember its inputs
            with open(table, "a") as f:
                f.write(key + "\\n")
            return fn(*args, **kwargs)
        if key in table.read_text().split():        # a replayed public input
            return fn(*args, **kwargs)
        raise NotImplementedError("P1: only the public inputs are known")
    return inner

for _name in NAMES:
    globals()[_name] = _replay(globals()[_name])
"""
CACHED = {"entropy.py": ["entropy", "discriminator", "s_star", "theorem1_entropy_change", "expected_discriminator",
                         "theorem2_entropy_change", "predicted_entropy_change", "token_stats"],
          "grpo.py": ["aggregate", "group_advantages", "clipped_surrogate", "pass_at_k"],
          "clipping.py": ["clip_b_mask", "clip_v_mask"]}


def _stub_line(pid: str, spec: str) -> str:
    """The raise line make_student.py writes for one function of the manifest."""
    p = manifest.problem(pid)
    return f"raise NotImplementedError({json.dumps(pid + ': ' + p['functions'][spec])})"


def _forged(kind: str, student_tree: Path, dest: Path) -> Path:
    """A submission folder of one cheating strategy."""
    dest.mkdir(parents=True)
    for name in SUBMITTED:
        shutil.copy2((REPO if kind == "cache" else student_tree) / name, dest / name)
    if kind == "hooks":
        text = (dest / "grpo.py").read_text()
        (dest / "grpo.py").write_text(text + f"\nRESULTS = {str(dest / 'results.json')!r}\n" + FORGE_HOOKS)
    elif kind == "exit":
        for name, line in (("entropy.py", "import sys\nsys.exit(0)\n"), ("grpo.py", "import os\nos._exit(0)\n")):
            text = (dest / name).read_text().replace("from __future__ import annotations\n",
                                                     "from __future__ import annotations\n" + line, 1)
            (dest / name).write_text(text)
    elif kind == "cache":
        for name, names in CACHED.items():
            (dest / name).write_text((dest / name).read_text()
                                     + f"\nTABLE = {str(dest / 'table.txt')!r}\nNAMES = {names!r}\n" + CACHE)
        (dest / "table.txt").write_text("")
    elif kind == "hang":
        stub = dest / "entropy.py"
        line = _stub_line("P1", "entropy:entropy")
        stub.write_text(stub.read_text().replace(line, "while True:\n        pass", 1))
        stub = dest / "grpo.py"
        line = _stub_line("P2", "grpo:group_advantages")
        stub.write_text(stub.read_text().replace(line, "print('x' * 10_000_000)\n    return rewards.float()", 1))
    return dest


def _copy_reference(dest: Path) -> Path:
    """The files the graded tests need (not the model, runs or figures)."""
    dest.mkdir(parents=True)
    for path in REPO.glob("*.py"):
        shutil.copy2(path, dest / path.name)
    shutil.copy2(REPO / "pytest.ini", dest / "pytest.ini")
    ignore = shutil.ignore_patterns("__pycache__", "SOLUTIONS.md", "INSTRUCTORS.md")
    shutil.copytree(REPO / "tests", dest / "tests", ignore=ignore)
    shutil.copytree(REPO / "assignment", dest / "assignment", ignore=ignore)
    (dest / "tiny-qwen2").symlink_to(REPO / "tiny-qwen2")
    return dest


def _patch(tree: Path, file: str, old: str, new: str) -> None:
    path = tree / file
    text = path.read_text()
    assert text.count(old) == 1, f"the planted bug no longer applies to {file}: {old!r}; update it here"
    path.write_text(text.replace(old, new))


def _grade(tree: Path, out: Path, problems: str = "", variant: int | None = None, submission: Path | None = None,
           env: dict | None = None) -> dict:
    extra = {**(env or {}), **({} if variant is None else {"ASSIGNMENT_VARIANT": str(variant)})}
    cmd = [sys.executable, "assignment/grade.py", "--results", str(out)]
    cmd += ["--problems", problems] if problems else []
    cmd += ["--submission", str(submission)] if submission else []
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=900, env={**os.environ, **extra})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(out.read_text()), "table": proc.stdout}


def _points(results: dict, pid: str) -> tuple[float, float]:
    mine = [t for t in results["tests"] if t["name"].startswith(pid + " ")]
    return sum(t["score"] for t in mine), sum(t["max_score"] for t in mine)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    dest = tmp_path_factory.mktemp("student") / "tree"
    result = make_student.make_student(dest)
    return dest, result


@pytest.fixture(scope="module")
def gradings(student, tmp_path_factory):
    """Every grading run of this file, started at once, two at a time."""
    base = tmp_path_factory.mktemp("grading")
    pool = ThreadPoolExecutor(max_workers=2)
    jobs = {"student": pool.submit(_grade, student[0], base / "student.json"),
            "reference": pool.submit(_grade, REPO, base / "reference.json")}

    def mutant(i, spec):
        pid, file, old, new, _ = spec
        tree = _copy_reference(base / f"mutant{i}")
        _patch(tree, file, old, new)
        return _grade(tree, tree / "results.json", pid)

    for i, spec in enumerate(MUTANTS):
        jobs[f"mutant{i}"] = pool.submit(mutant, i, spec)
    for i, spec in enumerate(HARMLESS):
        jobs[f"harmless{i}"] = pool.submit(mutant, f"-harmless{i}", spec)

    def forged(kind: str, **env):
        folder = _forged(kind, student[0], base / f"forged-{kind}")
        results = folder / "results.json"
        if kind == "cache":     # first the public inputs, answered and remembered
            _grade(REPO, base / "cache-public.json", submission=folder,
                   env={"ASSIGNMENT_SEED": "0", "CHEAT_RECORD": "1"})
        tree = student[0] if kind == "hooks" else REPO
        start = time.monotonic()
        graded = _grade(tree, results, "P1,P2" if kind == "hang" else "", submission=folder, env=env)
        return {**graded, "seconds": time.monotonic() - start, "public": kind == "cache" and
                json.loads((base / "cache-public.json").read_text())["score"]}

    for kind in ("hooks", "exit", "cache"):
        jobs[f"forged-{kind}"] = pool.submit(forged, kind)
    jobs["forged-hang"] = pool.submit(forged, "hang", ASSIGNMENT_TIME_LIMIT="4")
    yield jobs
    pool.shutdown(wait=True)


def test_student_version_collects_and_grades_zero(student, gradings):
    tree, result = student
    assert not (tree / "bench.py").exists() and not (tree / "assignment" / "SOLUTIONS.md").exists()
    assert not (tree / "tests" / "test_assignment.py").exists() and (tree / "assignment" / "grade.py").exists()
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests", "assignment/tests"], cwd=tree, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(tree / "assignment" / "tests")})
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-2000:]
    results = gradings["student"].result()
    assert results["score"] == 0, results["table"]
    for entry in results["tests"]:
        assert entry["output"].startswith("NotImplementedError: P"), entry
    assert results["table"].count("not attempted") == len(manifest.PROBLEMS) - 1, results["table"]
    assert "P8 " in results["table"] and "needs P" in results["table"]     # P8 reaches the others' stubs
    assert (tree / "assignment" / "tests" / "expected.pt").is_file()
    assert not (tree / "assignment" / "tests" / "oracles.py").exists()


def test_the_student_trees_commands_say_what_is_missing(student):
    """train.py in the incomplete tree: one line naming the problems the run needs, exit 2; the
    README names only files the tree has."""
    tree, _ = student
    proc = subprocess.run([sys.executable, "train.py", "--method", "clipv", "--mu", "1.0"], cwd=tree,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "P1, P2, P5, P6, P7" in lines[0] and "python assignment/grade.py" in lines[0], lines
    readme = (tree / "README.md").read_text()
    named = set(re.findall(r"[\w./-]+\.(?:py|sh|md|ipynb)\b", readme))
    missing = sorted(n for n in named if not (tree / n).exists() and not (tree / "docs" / n).exists()
                     and not list(tree.rglob(Path(n).name)))
    assert not missing, missing


def _handout_commands(section: str, program: str) -> list[list[str]]:
    """The section's `python PROGRAM ...` lines as argument lists, its NAME="..." variables expanded."""
    names = dict(re.findall(r'^\s*(\w+)="([^"]*)"', section, re.M))
    lines = re.findall(rf"^\s*(?:for [^\n]*do )?python {re.escape(program)} ([^\n;]+)", section, re.M)
    return [re.sub(r"\$(\w+)", lambda m: names.get(m.group(1), m.group(0)), line).split() for line in lines]


def _without(argv: list[str], *flags: str) -> list[str]:
    """argv without the given flags and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


def test_the_experiment_commands_run_a_few_steps(gradings, tmp_path):   # beside the grading runs
    """P8's commands, shortened: a training step on the testbed, the plot, an evaluation of the
    hard split, the chance curve and the pass@k figure."""
    section = HANDOUT.split("## P8 ", 1)[1].split("\n## ", 1)[0]
    train = _handout_commands(section, "train.py")
    assert len(train) >= 3 and all("countdown" in argv for argv in train), train
    run = tmp_path / "run"

    def ok(*argv):
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])

    ok("train.py", *_without(train[0], "--out"), "--steps", "1", "--prompts-per-step", "4", "--group-size", "2",
       "--max-new-tokens", "8", "--out", str(run))
    assert _handout_commands(section, "plot.py"), "the P8 section gives no plot.py command"
    ok("plot.py", str(run), "--out", str(tmp_path / "fig"), "--no-show")
    assert (tmp_path / "fig" / "entropy.png").is_file()
    evaluate = [argv for argv in _handout_commands(section, "eval.py") if "countdown:hard" in argv]
    assert evaluate, "the P8 section evaluates no model on the hard split"
    result = tmp_path / "eval-hard.json"
    ok("eval.py", *_without(evaluate[0], "--model", "--out", "--limit", "--n", "--max-new-tokens"),
       "--model", str(run / "final"), "--limit", "2", "--n", "2", "--max-new-tokens", "8", "--out", str(result))
    chance = _handout_commands(section, "countdown.py")
    assert chance and chance[0][:1] == ["--n"], chance
    ok("countdown.py", "--n", "2", "--max-k", "2", "--out", str(tmp_path / "chance.json"))
    passk = [argv for argv in _handout_commands(section, "plot.py") if "--passk" in argv]
    assert passk and {"--base", "--chance", "--eval-set"} <= set(passk[0]), passk
    ok("plot.py", "--passk", str(result), "--base", str(result), "--chance", str(tmp_path / "chance.json"),
       "--eval-set", "countdown:hard", "--out", str(tmp_path / "passk"), "--no-show")
    assert (tmp_path / "passk" / "passk.png").is_file()


def test_reference_scores_full_marks(gradings):
    results = gradings["reference"].result()
    assert results["score"] == sum(AUTOGRADED.values()), results["table"]
    assert all(e["score"] == e["max_score"] for e in results["tests"])


@pytest.mark.parametrize("i", range(len(MUTANTS)), ids=[m[4] for m in MUTANTS])
def test_each_planted_bug_loses_points_in_its_problem(gradings, i):
    pid = MUTANTS[i][0]
    results = gradings[f"mutant{i}"].result()
    earned, possible = _points(results, pid)
    assert possible == AUTOGRADED[pid] and earned < possible, results["table"]
    row = next(line for line in results["table"].splitlines() if line.startswith(pid + " "))
    assert "Hint:" in row and "not attempted" not in row, row    # the first failing check, with a hint
    assert SAYS.get(MUTANTS[i][4], "") in row, row


@pytest.mark.parametrize("i", range(len(HARMLESS)), ids=[m[4] for m in HARMLESS])
def test_right_code_written_differently_keeps_its_points(gradings, i):
    results = gradings[f"harmless{i}"].result()
    earned, possible = _points(results, HARMLESS[i][0])
    assert earned == possible, results["table"]


@pytest.mark.parametrize("kind", ["hooks", "exit"])
def test_a_forged_submission_scores_what_its_code_earns(gradings, kind):
    """Stub files with an atexit hook, a forked writer, patches of pytest and of the harness, and
    writes over results.json ("hooks"), or sys.exit(0) / os._exit(0) at import ("exit"): 0 points,
    and a results.json that is the grader's."""
    results = gradings[f"forged-{kind}"].result()
    assert results["score"] == 0 and all(e["score"] == 0 for e in results["tests"]), results["table"]
    assert len(results["tests"]) == sum(len(p["tests"]) for p in manifest.PROBLEMS)
    if kind == "exit":
        outputs = " ".join(e["output"] for e in results["tests"])
        assert "SystemExit" in outputs and "exit status 0" in outputs, outputs[:2000]


def test_replaying_the_public_outputs_scores_nothing(gradings):
    """A submission that answers only the inputs of the public tests (seed 0, whose expected values
    the student tree holds) earns full marks on them and nothing on the grader's own draw."""
    results = gradings["forged-cache"].result()
    assert results["public"] == sum(AUTOGRADED.values()), results["table"]
    assert results["score"] == 0, results["table"]


def test_a_hang_or_a_flood_of_output_ends_the_problem_with_a_message(gradings):
    results = gradings["forged-hang"].result()
    entropy_tests = [e for e in results["tests"] if e["name"].split(": ")[-1].startswith("test_entropy")]
    assert entropy_tests and all("time limit" in e["output"] for e in entropy_tests), entropy_tests
    advantages = [e for e in results["tests"] if "advantages" in e["name"]]
    assert any("printed more than 1 MB" in e["output"] for e in advantages), advantages
    assert results["seconds"] < 300, results["seconds"]     # 4 CPU s per test, at most 40 s of wall time


def test_variant_student_version_states_its_conventions(tmp_path):
    dest = tmp_path / "all-switches"
    make_student.make_student(dest, variant=ALL_SWITCHES)
    assert json.loads((dest / "assignment" / "variant.json").read_text())["switches"] == sorted(variants.SWITCHES)
    assert "THIS COURSE'S VARIANT" in (dest / "grpo.py").read_text()
    assert "std is unbiased" not in (dest / "grpo.py").read_text()     # one convention, not both
    assert "THIS COURSE'S VARIANT" in (dest / "clipping.py").read_text()
    ini = (dest / "pytest.ini").read_text()
    assert all(f"--deselect {n}" in ini for n in variants.SWITCHES[1]["deselect"] + manifest.DESELECT)


def test_no_removed_body_in_the_student_version(student, tmp_path):
    tree, result = student
    assert len(result["removed"]) == sum(len(p["functions"]) for p in manifest.PROBLEMS)
    assert make_student.leaks(tree, result["removed"]) == []
    for rel, names in make_student.STRIP.items():
        assert not any(f"def {n}(" in (tree / rel).read_text() for n in names), rel
    assert "clamp(1 - eps_low, 1 + eps_high)" not in (tree / "grpo.py").read_text()
    # the check can fail: a docs page that quotes one removed body is caught
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("```python\n" + result["removed"][0] + "```\n")
    assert make_student.leaks(tmp_path, result["removed"])
    # and so is a test helper that states a removed body in its own words
    for rel in make_student.STRIP:
        planted = tmp_path / "planted" / rel
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_text((REPO / rel).read_text())
        assert make_student.leaks(tmp_path / "planted", result["removed"]), rel
        planted.unlink()


def test_deselected_repository_tests_exist():
    for node in manifest.DESELECT + [n for s in variants.SWITCHES.values() for n in s["deselect"]]:
        file, name = node.split("::")
        assert f"def {name.split('[')[0]}(" in (REPO / file).read_text(), node


def test_handout_ids_and_points_equal_the_manifest():
    found = {pid: int(points) for pid, points in re.findall(r"^## (P\d|B\d)\b.*?\((\d+) points\)", HANDOUT, re.M)}
    expected = {p["id"]: manifest.total_points(p) for p in manifest.PROBLEMS}
    expected.update({b["id"]: b["written"] for b in manifest.BONUS})
    assert found == expected
    assert sum(manifest.total_points(p) for p in manifest.PROBLEMS) == 100
    for p in manifest.PROBLEMS:     # each problem says how it is tested
        section = HANDOUT.split(f"## {p['id']} ", 1)[1].split("\n## ", 1)[0]
        assert f"python assignment/grade.py --problems {p['id']}" in section, p["id"]


def test_the_submission_is_found_at_the_top_or_in_one_folder_inside(tmp_path):
    import grade
    inner = tmp_path / "upload" / "hw3"
    inner.mkdir(parents=True)
    for name in SUBMITTED:
        (inner / name).write_text("")
    assert grade.find_submission(tmp_path / "upload") == {name: inner / name for name in SUBMITTED}
    (tmp_path / "upload" / "grpo.py").write_text("")          # files at the top win
    assert grade.find_submission(tmp_path / "upload") == {"grpo.py": tmp_path / "upload" / "grpo.py"}
    (tmp_path / "empty").mkdir()
    assert grade.find_submission(tmp_path / "empty") == {}


def test_only_tracked_files_reach_the_student_version(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "kept.py").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "kept.py"], cwd=repo, check=True)
    (repo / "results.json").write_text("{}")                  # a stale result, never added
    assert make_student.source_files(repo) == ["kept.py"]


def test_p8_counts_only_when_the_problems_it_calls_pass_in_the_same_grading():
    """P8's check trusts the metrics the student's run writes: its points need P1, P2, P5, P6 and
    P7 at full marks in the same results, and grading P8 alone grades them too."""
    import grade
    p8 = manifest.problem("P8")
    assert p8["requires"] == ["P1", "P2", "P5", "P6", "P7"]
    graded = grade.with_required([p8])
    assert [p["id"] for p in graded] == ["P8", "P1", "P2", "P5", "P6", "P7"]

    def results(failing: str = "") -> dict:
        return {test: [{"outcome": "failed" if p["id"] == failing else "passed", "message": "wrong"}]
                for p in graded for test in p["tests"]}

    rows, entries = grade.score(results(), graded)
    row = next(r for r in rows if r["id"] == "P8")
    assert row["earned"] == AUTOGRADED["P8"] and "P1, P2, P5, P6 and P7 pass in this grading" in row["status"]
    for failing in p8["requires"]:
        rows, entries = grade.score(results(failing), graded)
        row = next(r for r in rows if r["id"] == "P8")
        assert row["earned"] == 0 and f"not yet: {failing} 0/" in row["status"], row
        assert all(e["score"] == 0 for e in entries if e["name"].startswith("P8 ")), entries
    rows, _ = grade.score(results(), [p8])            # graded without them: nothing to trust
    assert rows[0]["earned"] == 0 and "P1 not graded" in rows[0]["status"], rows
