"""The guide stays true: README.md and every page of docs/.

* every script a page runs (`python SCRIPT.py`, `torchrun ... SCRIPT.py`) answers --help;
* every command a page shows parses: train.py's through config.resolve_config (with the
  process split checked for torchrun), with a --dry-run where it needs no weights and no network;
  the other scripts' through their own argument parsers, stopped before they run;
* every `bash experiments.sh NAME` names an experiment the script knows;
* every relative link and image points to a file that exists, and every #anchor to a heading of
  the page it names (a missing file fails as its own test, named by the page and the link).

Scripts run in this process (runpy, as `python SCRIPT.py` would, with sys.argv set), which
costs milliseconds where a fresh interpreter costs seconds; one test runs the README's main
command in a fresh interpreter.
"""

import argparse
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import config
import distributed

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PAGES = {p.relative_to(REPO).as_posix(): p.read_text()
         for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
README_MAX_LINES = 220   # the README is the five-minute guide; details go to docs/


# ----------------------------------------------------------------------------- commands shown

def shown_commands(text: str) -> list[str]:
    """The command lines of a page: lines of code blocks (indented or fenced, backslash
    continuations joined, comments dropped) and inline code spans (which may wrap a line)."""
    fenced = re.findall(r"(?ms)^\s*```[^\n]*\n(.*?)^\s*```", text)
    text = re.sub(r"(?ms)^\s*```[^\n]*\n.*?^\s*```", "", text)
    blocks = [line[4:] for line in text.splitlines() if line.startswith("    ") and line.strip()]
    lines = "\n".join([*fenced, *blocks]).replace("\\\n", " ").splitlines()
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    spans = [re.sub(r"\s+", " ", s) for s in re.findall(r"`([^`]+)`", prose)]
    return [re.sub(r"\s#\s.*$", "", c).strip() for c in [*lines, *spans]]


def parse_command(command: str):
    """(launcher, script, args, processes) of a `python X.py`, `torchrun ... X.py` or
    `bash X.sh` command; None for anything else (prose, `python -m pytest`, a bare flag)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):   # OMP_NUM_THREADS=1 python ...
        words = words[1:]
    if len(words) >= 2 and words[0] in ("python", "python3") and words[1].endswith(".py"):
        return "python", words[1], words[2:], 1
    if len(words) >= 2 and words[0] == "bash" and words[1].endswith(".sh"):
        return "bash", words[1], words[2:], 1
    if words and words[0] == "torchrun":
        scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
        if scripts:
            i = scripts[0]
            launcher = words[1:i]
            procs = 1
            for flag in ("--nproc-per-node", "--nproc_per_node"):
                if flag in launcher:
                    procs = int(launcher[launcher.index(flag) + 1])
            return "torchrun", words[i], words[i + 1:], procs
    return None


COMMANDS = sorted({(page, parsed[0], parsed[1], tuple(parsed[2]), parsed[3])
                   for page, text in PAGES.items() for c in shown_commands(text)
                   if (parsed := parse_command(c))})
SCRIPTS = sorted({script for _, launcher, script, _, _ in COMMANDS if launcher != "bash"})
PLACEHOLDER = re.compile(r"[<>]")   # `python train.py --dry-run <flags>`: not a command to parse


def command_id(c) -> str:
    page, launcher, script, args, procs = c
    launcher = f"torchrun --nproc-per-node {procs}" if launcher == "torchrun" else launcher
    return f"{page}: {launcher} {script} {' '.join(args)}".strip()


def run_script(script: str, args: list[str], monkeypatch) -> int:
    """`python script args` in this process (its folder first on sys.path, as python puts it);
    returns the exit status."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str((REPO / script).parent))
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as stop:
        return stop.code or 0
    return 0


# ----------------------------------------------------------------------------- the README

def test_readme_names_the_main_scripts():
    assert {"train.py", "eval.py", "plot.py", "bench.py"} <= set(SCRIPTS)
    assert "python -m pytest" in README


def test_readme_test_command_is_the_one_ci_runs():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "python -m pytest"
    assert "\n    python -m pytest\n" in README


def test_readme_is_a_short_guide():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines; it is the guide (at most "
                                       f"about 200): move details to a page of docs/")


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("docs/")])
def test_each_docs_page_says_what_it_covers_and_links_back(page):
    text = PAGES[page]
    assert text.startswith("# "), f"{page} opens with its title"
    opening = text.split("\n## ", 1)[0]
    assert "](../README.md)" in opening, f"{page}'s opening links back to ../README.md"


# ----------------------------------------------------------------------------- scripts and commands

@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_shown_answers_help(script, monkeypatch, capsys):
    assert (REPO / script).is_file(), f"{script} is shown but does not exist"
    assert run_script(script, ["--help"], monkeypatch) == 0
    assert "usage:" in capsys.readouterr().out


def test_the_readme_command_runs_dry_in_a_fresh_interpreter():
    """The README's first command, as a user types it (plus --dry-run: no training)."""
    result = subprocess.run([sys.executable, "train.py", "--method", "clipv", "--mu", "1.0",
                             "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plan: ")


def needs_hub(cfg) -> bool:
    """Whether a run of cfg downloads a model or a data set (then it can only be parsed)."""
    local = {"synthetic", "auto", "heldout"}
    names = [cfg.dataset, *cfg.eval_datasets.split(",")]
    data_ok = all(n.split(":")[0].strip() in local or Path(REPO, n).is_file() for n in names if n)
    return not (Path(REPO, cfg.model).is_dir() and data_ok)


TRAIN = [c for c in COMMANDS if c[2] == "train.py" and not PLACEHOLDER.search(" ".join(c[3]))]
OTHERS = [c for c in COMMANDS if c[1] != "bash" and c[2] != "train.py"
          and not PLACEHOLDER.search(" ".join(c[3]))]


@pytest.mark.parametrize("command", TRAIN, ids=command_id)
def test_each_train_command_shown_parses(command, monkeypatch, capsys, tmp_path):
    page, launcher, script, args, procs = command
    args = list(args)
    if "--resume" in args:   # the run folder is the reader's: parse and validate only
        cfg = config.parse_args(args)
        config.validate(cfg)
        return
    cfg = config.resolve_config(args)
    distributed.check_split(cfg.prompts_per_step, cfg.mini_batches, distributed.World(0, procs))
    if needs_hub(cfg) or "--dry-run" in args:
        return
    import train
    monkeypatch.setenv("WORLD_SIZE", str(procs))
    assert train.main([*args, "--dry-run"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("plan: ")


class _Parsed(BaseException):
    """A BaseException, as SystemExit: an entry point's distributed.run reports and exits on an
    uncaught Exception, and this signal must pass it."""


@pytest.mark.parametrize("command", OTHERS, ids=command_id)
def test_each_other_command_shown_parses(command, monkeypatch, capsys):
    """The script runs until its parser has read the arguments, and stops there."""
    page, launcher, script, args, procs = command
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        parse(self, argv, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        code = run_script(script, list(args), monkeypatch)
        pytest.fail(f"{script} {' '.join(args)} exited with {code} before parsing: "
                    f"{capsys.readouterr().err}")


EXPERIMENTS = set(re.findall(r"(?m)^\s+([\w-]+)\)\s", (REPO / "experiments.sh").read_text()))


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[1] == "bash"], ids=command_id)
def test_each_experiment_shown_exists(command):
    page, launcher, script, args, procs = command
    assert script == "experiments.sh" and args and args[0] in EXPERIMENTS, command_id(command)


def test_experiments_script_rejects_an_unknown_experiment():
    result = subprocess.run(["bash", "experiments.sh", "nonsense"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "unknown experiment" in result.stderr


# ----------------------------------------------------------------------------- links and figures

def slugs(text: str) -> set[str]:
    """The #anchors of a page's headings, as GitHub makes them."""
    text = re.sub(r"(?ms)^\s*```.*?^\s*```", "", text)
    found, seen = set(), {}
    for heading in re.findall(r"(?m)^#{1,6} (.+?)\s*#*$", text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(text: str) -> list[str]:
    text = re.sub(r"(?ms)^\s*```.*?^\s*```", "", text)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"<img[^>]*\bsrc=\"([^\"]+)\"", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]   # http:, mailto:


LINKS = sorted({(page, target) for page, text in PAGES.items() for target in links(text)})


@pytest.mark.parametrize("page,target", LINKS, ids=[f"{p} -> {t}" for p, t in LINKS])
def test_each_link_and_image_points_to_something_that_exists(page, target):
    path, _, anchor = target.partition("#")
    file = (REPO / page).parent / path if path else REPO / page
    assert file.exists(), f"{page} links to {path}, which does not exist"
    if anchor and file.suffix == ".md":
        assert anchor in slugs(file.read_text()), (f"{page} links to #{anchor}, which is no "
                                                   f"heading of {path or page}")


def test_the_guide_shows_commands_and_links():
    """The collectors above found what they should (a regex that matches nothing passes every
    parametrized test vacuously)."""
    shown = {(c[1], c[2]) for c in COMMANDS}
    assert {("python", "train.py"), ("torchrun", "train.py"), ("torchrun", "bench_dist.py"),
            ("bash", "experiments.sh")} <= shown
    assert any(c[2] == "train.py" and "--model" in c[3] for c in TRAIN)
    assert ("README.md", "docs/results.md") in LINKS
    assert any(t.endswith(".png") for _, t in LINKS)
    assert any("#" in t for _, t in LINKS)
