"""Write the student version of this repository into a folder (the course assignment).

    python assignment/make_student.py DIR [--variant N | --variant-from STUDENT_ID]

DIR receives every file of the repository (those git tracks, or a walk of the tree outside git)
except manifest.EXCLUDE, with the body of every function the manifest names replaced by
`raise NotImplementedError("<problem id>: <what to implement>")`; the signature, decorators and
docstring stay. Functions are found by name with `ast`, so the
reference carries no solution markers and new code in the tree (docs, notebooks, new methods)
is copied as it is. Then:
  * the repository tests lose the definitions of STRIP (independent statements of removed
    bodies), and the README the mentions of left-out files (README_EDITS);
  * assignment/tests/expected.pt stores the graded tests' expected values for their public
    inputs (their oracles.py stays out);
  * pytest.ini deselects the repository tests that need a left-out file (manifest.DESELECT);
  * --variant N changes the conventions of assignment/variants.py in the docstrings (and the
    callers a switch names) and writes assignment/variant.json, which the graded tests follow;
    --variant-from STUDENT_ID takes N from a hash of the id (variants.from_student);
  * the leak check: no removed body, none of its distinctive lines and none of ORACLE_MARKERS
    may appear in any file of DIR (whitespace ignored; notebooks' cells and outputs included). A leak stops with the
    file to fix and exit status 1, and DIR is left for inspection.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import manifest  # noqa: E402
import variants  # noqa: E402

REPO = HERE.parent
# Definitions left out of the student version's copies of the repository's tests: independent
# statements of removed bodies (the released keep rules, verl's aggregation, the pass@k
# binomials) and the tests that use them. The graded tests check the same against stored values.
STRIP = {
    "tests/test_clipping.py": ["_released_rules", "test_masks_equal_the_released_rules_on_random_batches"],
    "tests/test_grpo.py": ["_verl_agg", "test_aggregate_equals_verl_formulas_on_random_batches"],
    "tests/test_eval.py": ["test_pass_at_k_is_stable_for_n_in_the_hundreds"],
}

# Code that states a removed body independently, flagged wherever it appears in the student
# version (compared without whitespace): the names of those statements, their key lines, and an
# import of their home in the instructor's tree (assignment/tests/oracles.py).
ORACLE_MARKERS = [
    "import oracles", "def _released_clip_b", "def _released_clip_v", "def _verl_agg", "comb(n - c, k)",
    "clamp(1 - eps_low, 1 + eps_high) * adv", "clamp(min=1 - eps_low, max=1 + eps_high) * adv",
    "s - mean >= -mu * std", "keep_neg = x <= mu * std",
]

# The student version's README.md names only files that it has: (old, new) substitutions made
# exactly once; then any table row still naming a left-out file is dropped.
README_EDITS = [
    ("measured on 2 CPU cores (`bash experiments.sh mu`, then `bash experiments.sh passk`):",
     "measured on 2 CPU cores with the full repository's experiment driver:"),
    ("is one command (`bash experiments.sh mu`: 18 runs of 300",
     "is one command of the full repository (18 runs of 300"),
    ("| teach or take it as a course assignment (`python assignment/make_student.py DIR` writes the student "
     "version, `python assignment/grade.py` grades it; instructors: [INSTRUCTORS.md](assignment/INSTRUCTORS.md)) |",
     "| the course assignment (`python assignment/grade.py` grades your code) |"),
    ("`tests/test_readme.py` keeps this guide and docs/ true (every command\n"
     "parses, every link and figure exists). ", ""),
]

REPO_ONLY = ["bench.py", "bench_gpu.py", "bench_dist.py", "experiments.sh", "assignment/make_student.py",
             "assignment/INSTRUCTORS.md", "assignment/SOLUTIONS.md", "tests/test_readme.py"]
MIN_LINE = 24   # a removed line this long (whitespace removed) is distinctive unless kept code has it
TEST_LINES = 3  # in tests/, this many distinctive lines of one body make a leak


def source_files(repo: Path) -> list[str]:
    """Relative paths of the repository's files (those git tracks: a stale results.json or a
    scratch file stays out), minus manifest.EXCLUDE."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "-z"],
                             cwd=repo, capture_output=True, check=True).stdout.decode()
        paths = [p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):   # not a git checkout: walk it
        paths = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()]
    keep = [p for p in paths if (repo / p).is_file()
            and not any(fnmatch.fnmatch(p, pat) or p == pat for pat in manifest.EXCLUDE)]
    return sorted(keep)


def _find(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    nodes: list = tree.body
    node = None
    for part in qualname.split("."):
        matches = [n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                   and n.name == part]
        if len(matches) != 1:
            raise RuntimeError(f"{qualname}: found {len(matches)} definitions named {part!r}; "
                               "fix assignment/manifest.py")
        node = matches[0]
        nodes = node.body
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise RuntimeError(f"{qualname} is not a function; fix assignment/manifest.py")
    return node


def stub_module(text: str, stubs: dict[str, str]) -> tuple[str, list[str]]:
    """text with the bodies of stubs' functions ({qualname: 'P1: todo'}) replaced; the removed
    bodies' source."""
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    cuts = []
    for qualname, message in stubs.items():
        fn = _find(tree, qualname)
        body = fn.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str)
        if has_doc and len(body) == 1:
            raise RuntimeError(f"{qualname} has only a docstring; nothing to remove")
        first = body[1] if has_doc else body[0]
        start = body[0].end_lineno if has_doc else first.lineno - 1   # 0-based: the body's first line
        indent = " " * first.col_offset
        cuts.append((start, body[-1].end_lineno, indent + f"raise NotImplementedError({json.dumps(message)})\n"))
    removed = []
    for start, end, stub in sorted(cuts, reverse=True):
        removed.append("".join(lines[start:end]))
        lines[start:end] = [stub]
    return "".join(lines), removed


def strip_definitions(text: str, names: list[str], where: str) -> str:
    """text without the top-level definitions of names (with their decorators and the comment
    lines just above them)."""
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    found = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names}
    missing = sorted(set(names) - set(found))
    if missing:
        raise RuntimeError(f"{where} no longer defines {missing}; update STRIP in assignment/make_student.py")
    for node in sorted(found.values(), key=lambda n: -n.lineno):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        del lines[start:node.end_lineno]
    return re.sub(r"\n{4,}", "\n\n\n", "".join(lines))


def student_readme(text: str) -> str:
    """The README with README_EDITS made and the table rows that name a left-out file dropped."""
    for old, new in README_EDITS:
        text = variants.substitute(text, old, new, "README.md")
    names = {Path(p).name for p in REPO_ONLY} | set(REPO_ONLY)
    rows = [line for line in text.splitlines(keepends=True)
            if not (line.startswith("|") and any(f"`{n}`" in line or f"({n})" in line for n in names))]
    return "".join(rows)


def _squash(text: str) -> str:
    """Text without whitespace or comments, for a comparison that survives reformatting."""
    text = re.sub(r"#[^\n]*", "", text)
    return re.sub(r"\s+", "", text)


def _searchable(path: Path) -> str | None:
    """A file's text for the leak check (a notebook's cell sources and outputs), or None if binary."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".ipynb":
        try:
            cells = json.loads(text).get("cells", [])
        except json.JSONDecodeError:
            return text
        parts = []
        for cell in cells:
            parts.append("".join(cell.get("source", [])))
            for out in cell.get("outputs", []):
                parts.append("".join(out.get("text", [])))
                parts.extend("".join(v) if isinstance(v, list) else str(v)
                             for v in out.get("data", {}).values())
        text = text + "\n" + "\n".join(parts)
    return text


def leaks(student: Path, removed: list[str]) -> list[str]:
    """Where a removed body, or its distinctive lines, appear in the student tree. A line is
    distinctive if it is at least MIN_LINE characters long and the kept code of the top-level .py
    files does not have it (`valid = response_mask.bool()` is everywhere). The repository's own
    tests/ state some released rules independently (a line may coincide), so there a body is
    flagged from TEST_LINES of its distinctive lines on; anywhere else from one. Any file with
    one of ORACLE_MARKERS (code that states a removed body in other words) is flagged too."""
    kept = _squash("\n".join(p.read_text() for p in sorted(student.glob("*.py"))))
    bodies = []
    for body in removed:
        lines = {_squash(line) for line in body.splitlines()}
        bodies.append((_squash(body), {x for x in lines if len(x) >= MIN_LINE and x not in kept}))
    markers = [_squash(m) for m in ORACLE_MARKERS]
    found = []
    for path in sorted(p for p in student.rglob("*") if p.is_file()):
        text = _searchable(path)
        if text is None:
            continue
        flat = _squash(text)
        rel = path.relative_to(student).as_posix()
        found += [f"{rel}: an independent statement of a removed body ({m[:50]})" for m in markers if m in flat]
        allowed = TEST_LINES - 1 if rel.startswith("tests/") else 0
        for whole, lines in bodies:
            if whole and whole in flat:
                found.append(f"{rel}: a whole removed body ({whole[:50]}...)")
            hits = sorted(line for line in lines if line in flat)
            if len(hits) > allowed:
                found += [f"{rel}: a removed line ({line[:70]})" for line in hits]
    return found


def _deselect(ini: str, node_ids: list[str]) -> str:
    """pytest.ini with --deselect options for node_ids added to addopts."""
    extra = "".join(f"\n    --deselect {n}" for n in node_ids)
    if re.search(r"^addopts\s*=", ini, flags=re.M):
        return re.sub(r"^(addopts\s*=[^\n]*)", lambda m: m.group(1) + extra, ini, count=1, flags=re.M)
    return re.sub(r"^\[pytest\][^\n]*", lambda m: m.group(0) + "\naddopts =" + extra, ini, count=1, flags=re.M)


def record_snapshot(dest: Path, variant: int, repo: Path = REPO) -> None:
    """Store in dest the graded tests' expected values for the public inputs (seed 0): grade.py
    --snapshot runs them on a copy of the reference, patched to the variant's solution."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "reference"
        tree.mkdir()
        for path in repo.glob("*.py"):
            shutil.copy2(path, tree / path.name)
        for bit in variants.switches(variant):
            for rel, old, new in variants.SWITCHES[bit]["solution"]:
                (tree / rel).write_text(variants.substitute((tree / rel).read_text(), old, new, rel))
        proc = subprocess.run([sys.executable, str(HERE / "grade.py"), "--snapshot", str(dest), "--tree", str(tree)],
                              capture_output=True, text=True, env={**os.environ, "ASSIGNMENT_VARIANT": str(variant)})
    if proc.returncode != 0:
        raise RuntimeError(f"recording the expected values failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")


def make_student(dest: Path, variant: int = 0, repo: Path = REPO, snapshot: bool = True) -> dict:
    """Write the student version into dest (absent or empty), with the graded tests' expected
    values in assignment/tests/expected.pt unless snapshot is False (a tree to grade in, not to
    hand out). Returns {"files": [...], "removed": [bodies], "leaks": [...]}; raises RuntimeError
    on a leak."""
    switches = variants.switches(variant)
    if dest.exists() and not dest.is_dir():
        raise RuntimeError(f"{dest} is a file, not a folder; give a new folder.")
    if dest.exists() and any(dest.iterdir()):
        raise RuntimeError(f"{dest} is not empty; give a new folder.")
    files = source_files(repo)
    by_module: dict[str, dict[str, str]] = {}
    for p in manifest.PROBLEMS:
        for spec, todo in p["functions"].items():
            module, qualname = spec.split(":")
            by_module.setdefault(f"{module}.py", {})[qualname] = f"{p['id']}: {todo}"
    missing = sorted(set(by_module) - set(files))
    if missing:
        raise RuntimeError(f"the manifest names functions in {missing}, which are not in the tree.")
    removed = []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
        if rel in by_module:
            text, gone = stub_module((repo / rel).read_text(), by_module[rel])
            removed += gone
            target.write_text(text)
        if rel in STRIP:
            target.write_text(strip_definitions(target.read_text(), STRIP[rel], rel))
    deselect = list(manifest.DESELECT)
    for bit in switches:
        for rel, old, new in variants.SWITCHES[bit]["docs"]:
            path = dest / rel
            path.write_text(variants.substitute(path.read_text(), old, new, rel))
        for rel, old, new in variants.SWITCHES[bit].get("tests", []):
            path = dest / rel
            path.write_text(variants.substitute(path.read_text(), old, new, rel, every=True))
        deselect += variants.SWITCHES[bit]["deselect"]
    if switches:
        (dest / "assignment" / "variant.json").write_text(json.dumps({
            "variant": variant, "switches": switches,
            "conventions": [variants.SWITCHES[b]["summary"] for b in switches]}, indent=1) + "\n")
    ini = dest / "pytest.ini"
    if ini.exists():
        ini.write_text(_deselect(ini.read_text(), deselect))
    readme = dest / "README.md"
    if readme.exists():
        readme.write_text("> **Student version** for the course assignment: start with "
                          "[assignment/HANDOUT.md](assignment/HANDOUT.md).\n\n"
                          + student_readme(readme.read_text()))
    if snapshot:
        record_snapshot(dest / "assignment" / "tests" / "expected.pt", variant, repo)
    found = leaks(dest, removed)
    if found:
        raise RuntimeError("the student version would reveal removed code:\n  " + "\n  ".join(found)
                           + "\nRemove it from those files or add them to manifest.EXCLUDE.")
    return {"files": files, "removed": removed, "leaks": found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the student version of the repository into DIR.")
    p.add_argument("dest", type=Path, help="a new or empty folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--variant", type=int, default=0,
                       help=f"0: the released conventions; 1 to {max(variants.VARIANTS)}: the switches of "
                            "assignment/variants.py, by bit")
    which.add_argument("--variant-from", metavar="STUDENT_ID", default=None,
                       help="the variant derived from this student id (the same id gives the same variant)")
    args = p.parse_args(argv)
    if args.variant_from is not None:
        if not args.variant_from.strip():
            p.error("--variant-from needs a non-empty student id.")
        args.variant = variants.from_student(args.variant_from)
    try:
        result = make_student(args.dest, args.variant)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    n = sum(len(p["functions"]) for p in manifest.PROBLEMS)
    print(f"wrote {len(result['files'])} files into {args.dest}: {n} functions to implement "
          f"(variant {args.variant}); start with {args.dest / 'assignment' / 'HANDOUT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
