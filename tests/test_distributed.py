"""Two processes under torchrun (gloo, CPU) against one: the same masks, metrics and gradients
on a fixed batch (tests/dist_equivalence.py), and a 2-process training run that logs once,
checkpoints, stops on SIGTERM, resumes (in 2 processes and in 1; a 1-process checkpoint in 2)
and writes a final/ that eval.py loads; both ways of sampling under FSDP2 (bench_dist.py)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import runlock
import distributed
from distributed import World

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(args: list[str], env: dict = ENV, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(TORCHRUN + args, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


def torchrun_script(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` (a script that imports the repository's files) run by 2 processes."""
    script = tmp_path / "script.py"
    script.write_text(code)
    return torchrun([str(script), *args], env={**ENV, "PYTHONPATH": str(REPO)})


def test_run_exits_with_the_entrys_status_or_1_and_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")   # one process: exit's sys.exit, which pytest can catch
    with pytest.raises(SystemExit) as done:
        distributed.run(lambda: 3)
    assert done.value.code == 3

    def entry():
        raise RuntimeError("an uncaught error")

    with pytest.raises(SystemExit) as done:
        distributed.run(entry)
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "RuntimeError: an uncaught error" in err


def test_rank_groups_split_every_mini_batch_evenly():
    # 8 groups, 2 mini-batches (groups 0-3 and 4-7), 2 ranks: each rank half of each mini-batch
    assert distributed.rank_groups(8, 2, World(0, 2)) == [0, 1, 4, 5]
    assert distributed.rank_groups(8, 2, World(1, 2)) == [2, 3, 6, 7]
    assert distributed.rank_groups(8, 2, World()) == list(range(8))
    assert distributed.local_rows(4, 2, 1, World(1, 2)).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="divisible by --mini-batches x processes"):
        distributed.check_split(6, 2, World(0, 2))


class _Rows:
    """A stand-in for a rollout batch of 8 groups of 2 rows: only its length and group size."""
    group_size = 2

    def __len__(self) -> int:
        return 16


def test_each_rank_trains_its_part_of_every_mini_batch():
    # 2 mini-batches (rows 0-7 and 8-15), 2 ranks: rank 1 holds groups 2, 3 and 6, 7 of the 8
    for world in (World(), World(0, 2), World(1, 2)):
        split = distributed.mini_batches(_Rows(), 2, world)
        assert [whole.tolist() for whole, _ in split] == [list(range(8)), list(range(8, 16))]
        mine = distributed.local_rows(8, 2, 2, world)
        assert [part.tolist() for _, part in split] == [w[torch.isin(w, mine)].tolist() for w, _ in split]
    assert [part.tolist() for _, part in distributed.mini_batches(_Rows(), 2, World(1, 2))] == \
        [[4, 5, 6, 7], [12, 13, 14, 15]]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    with open(out / "one.log", "w") as log:                                         # beside the two
        one = subprocess.Popen([sys.executable, "tests/dist_equivalence.py", str(out / "one.pt")],
                               cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        two = torchrun(["tests/dist_equivalence.py", str(out / "two.pt")])
        one.wait(timeout=600)
    assert one.returncode == 0, (out / "one.log").read_text()[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    return (torch.load(out / "one.pt", weights_only=False), torch.load(out / "two.pt", weights_only=False))


def _differences(a: dict, b: dict) -> dict[str, float]:
    """Largest relative differences of the metrics and of each parameter's update."""
    metrics = max(abs(a["metrics"][k] - b["metrics"][k]) / max(abs(a["metrics"][k]), 1e-12)
                  for k in a["metrics"] if isinstance(a["metrics"][k], float))
    update = max(float((a["update"][k] - b["update"][k]).abs().max() / a["update"][k].abs().max().clamp_min(1e-30))
                 for k in a["update"])
    return {"metrics": metrics, "update": update}


def test_two_processes_compute_what_one_does(equivalence):
    one, two = equivalence
    assert set(one) == set(two) and len(one) == 11
    for name in one:
        a, b = one[name], two[name]
        assert torch.equal(a["keep"], b["keep"]), name
        assert (a["penalised"] is None) == (b["penalised"] is None)
        if a["penalised"] is not None:
            assert torch.equal(a["penalised"], b["penalised"]), name
        assert a["metrics"].keys() == b["metrics"].keys()
        diff = _differences(a, b)
        assert diff["metrics"] < 1e-9 and diff["update"] < 1e-9, (name, diff)   # float64
    # the masks did something, so the comparison could fail
    assert one["clipb"]["metrics"]["masked_frac_neg"] > 0
    assert one["clipv-cap"]["metrics"]["masked_frac"] != one["clipv"]["metrics"]["masked_frac"]
    assert one["kl-cov"]["penalised"].any()
    assert one["peers"]["metrics"]["entropy_adv_bonus"] > 0 and "gspo_clip_frac" in one["peers"]["metrics"]
    head, embedding = (one["untied"]["update"][k] for k in ("lm_head.weight", "model.embed_tokens.weight"))
    assert not torch.equal(head, embedding) and head.abs().max() > 0    # the untied head trains apart


def test_statistics_of_each_rank_alone_would_differ(equivalence, tmp_path):
    """The equivalence can fail: masks from each rank's own rows (a local statistic) are not
    those of the whole batch."""
    out = tmp_path / "local.pt"
    run = torchrun(["tests/dist_equivalence.py", str(out), "--configs", "clipb", "forking",
                    "--local-statistics"])
    assert run.returncode == 0, run.stderr[-3000:]
    local = torch.load(out, weights_only=False)
    whole = equivalence[0]                                   # one process, the whole batch
    rows = distributed.local_rows(8, 4, 2, World(0, 2))      # rank 0's rows, what it saved
    differs = {name: not torch.equal(local[name]["keep"], whole[name]["keep"][rows, :local[name]["keep"].shape[1]])
               for name in ("clipb", "forking")}
    assert differs["forking"], differs      # its top 20% by entropy is a batch-wide choice


TRAIN = ["train.py", "--steps", "4", "--save-every", "2", "--eval-every", "4", "--eval-limit", "8",
         "--eval-n", "2", "--prompts-per-step", "4", "--group-size", "4", "--method", "clipb",
         "--mu", "1.0", "--mini-batches", "2"]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k, v in ra.items():
            if not k.startswith("time") and k != "tokens_per_s":
                assert rb[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (ra["step"], k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run = torchrun(TRAIN + ["--out", str(out)])
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_two_process_run_logs_once_checkpoints_and_writes_a_loadable_final(straight):
    records = _metrics(straight)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]               # rank 0 alone logs
    assert "eval/synthetic:test/avg@2" in records[-1]
    assert records[-1]["eval/synthetic:test/num_problems"] == 8          # both halves pooled
    state = torch.load(straight / "checkpoint-4" / "trainer_state.pt", weights_only=False)
    assert state["world_size"] == 2 and state["optimizer"] == "optimizer"
    assert (straight / "checkpoint-4" / "optimizer" / ".metadata").is_file()
    ev = subprocess.run([sys.executable, "eval.py", "--model", str(straight / "final"), "--limit", "4",
                         "--n", "2", "--out", str(straight / "eval")], cwd=REPO, env=ENV,
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-3000:]


def test_sigterm_then_resume_continues_exactly(straight, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(TORCHRUN + TRAIN + ["--out", str(out)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoint-2").is_dir():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)      # torchrun forwards it to both ranks
    log = proc.communicate(timeout=300)[0]
    assert (out / "checkpoint-2").is_dir(), log[-3000:]
    resumed = torchrun(TRAIN + ["--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same(_metrics(straight), _metrics(out))


def test_a_two_process_checkpoint_resumes_in_one_process(straight, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint-2", "config.json"):
        src = straight / name
        subprocess.run(["cp", "-r", str(src), str(out / name)], check=True)
    lines = [r for r in _metrics(straight) if r["step"] <= 2]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = subprocess.run([sys.executable] + TRAIN + ["--out", str(out), "--resume"], cwd=REPO,
                         env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    records = _metrics(out)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records[1:])


def one_sentence_and_every_rank_exits_2(run: subprocess.CompletedProcess, sentence: str) -> None:
    """A mistake under torchrun: said once, by rank 0, and both ranks exit 2 (torchrun's own
    report of them follows, and torchrun exits 1)."""
    assert run.stderr.count(sentence) == 1 and run.stderr.count("error:") == 1, run.stderr[-3000:]
    assert run.stderr.count("exitcode  : 2 ") == 2, run.stderr[-3000:]
    assert "ChildFailedError" in run.stderr and run.returncode == 1


def test_a_world_size_that_does_not_divide_the_groups_is_one_sentence(tmp_path):
    # a bad flag for 2 processes: every process finds it before the process group starts
    run = torchrun(TRAIN + ["--prompts-per-step", "2", "--out", str(tmp_path / "x")])
    one_sentence_and_every_rank_exits_2(run, "must be divisible by --mini-batches x processes (2 x 2)")
    assert not (tmp_path / "x").exists()


def test_a_folder_another_run_holds_is_one_sentence_under_torchrun(tmp_path):
    # found by rank 0 (it takes the folder's lock) and broadcast to the other rank
    locked = tmp_path / "locked"
    locked.mkdir()
    runlock.lock_run_folder(locked)          # this process holds it, as a live run would
    try:
        run = torchrun(TRAIN + ["--out", str(locked)])
    finally:
        runlock.release_run_folders()
    one_sentence_and_every_rank_exits_2(run, f"--out {locked} is in use by another run (pid {os.getpid()} on ")
    assert sorted(p.name for p in locked.iterdir()) == ["run.lock"]           # nothing written


def test_a_rank_that_dies_ends_the_run_instead_of_hanging(tmp_path):
    start = time.time()
    run = torchrun(["tests/dist_equivalence.py", str(tmp_path / "x.pt"), "--die-on-rank", "1"], timeout=300)
    assert run.returncode != 0 and time.time() - start < 120
    assert "rank 1 dies on purpose" in run.stderr and "rank      : 1" in run.stderr   # torchrun names it


def test_generating_through_the_sharded_model_gives_the_copys_tokens(tmp_path):
    # bench_dist.py's two ways of sampling under FSDP2: ranks stop at different steps, so the
    # sharded model needs synced_gpus (rollout.generate) or the per-layer all-gathers would hang
    out = tmp_path / "bench_dist.json"
    # (without it this run hangs; measured). The shipped model with its EOS made likelier
    # (bench_gpu.long_tailed_eos) gives responses of very different lengths.
    result = torchrun(["bench_dist.py", "--eos-mean", "4", "--prompts", "3", "--tokens", "16",
                       "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    measured, arithmetic = json.loads(out.read_text())
    assert len(set(measured["longest_per_rank"])) == 2, "the ranks should stop at different steps"
    assert measured["same_tokens"]
    assert arithmetic["sharded_held_gb"] < arithmetic["copy_held_gb"] / 4   # 3.1 against 15.2 GB
    assert arithmetic["decode_forwards"] == 7168      # --preset paper: 128 rows a rank, one call
    assert 15.2 < arithmetic["copy_held_gb"] < 15.3   # 2 bytes x 7.6 B parameters


LOAD_CHECK = """
import sys
from pathlib import Path
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
import checkpoint, config, data, distributed, policy, train
path = Path(sys.argv[1])
world = distributed.init(torch.device("cpu"))
model, _ = policy.load_policy(str(path), torch.device("cpu"))
distributed.shard(model)
optimizer, scheduler = train.make_optimizer(model, config.parse_args([]))
saved = checkpoint.load_trainer_state(path)
checkpoint.restore(path, model, optimizer, scheduler, data.PromptSampler(4, 0), world)
whole = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
expected = checkpoint.by_name(saved["optimizer"], model)
for name, moments in expected["state"].items():
    for key, value in moments.items():
        assert torch.equal(whole["state"][name][key], value), (name, key)
assert world.size == 2 and len(whole["state"]) == len(expected["state"]) > 10
print("restored exactly on rank", world.rank)
distributed.exit(0)
"""


def test_a_one_process_checkpoint_resumes_under_torchrun(tmp_path):
    out = tmp_path / "run"
    one = subprocess.run([sys.executable] + TRAIN + ["--out", str(out), "--steps", "2"], cwd=REPO,
                         env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    # every rank holds exactly its shards of the saved AdamW moments (gathered back: equal)
    check = torchrun_script(tmp_path, LOAD_CHECK, str(out / "checkpoint-2"))
    assert check.returncode == 0 and check.stdout.count("restored exactly") == 2, check.stderr[-3000:]
    resumed = torchrun(TRAIN + ["--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in _metrics(out)] == [0, 1, 2, 3, 4]


BF16_CHECK = """
import torch
import config, distributed, policy
world = distributed.init(torch.device("cpu"))
model, tokenizer = policy.load_policy(config.parse_args([]).model, torch.device("cpu"))
distributed.shard(model, torch.bfloat16)
ids = torch.randint(0, 200, (2, 9))
logits = model(input_ids=ids).logits
assert logits.dtype == torch.bfloat16, logits.dtype            # computed in bf16 ...
logits.float().logsumexp(-1).sum().backward()
for name, p in model.named_parameters():                       # ... masters and gradients float32
    assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
print("bf16 compute, float32 masters on rank", world.rank)
distributed.exit(0)
"""


def test_bf16_compute_under_fsdp2_keeps_float32_masters(tmp_path):
    # the mixed-precision policy that CUDA runs use, here on gloo: --dtype bfloat16
    check = torchrun_script(tmp_path, BF16_CHECK)
    assert check.returncode == 0 and check.stdout.count("float32 masters") == 2, check.stderr[-3000:]
    run = torchrun(TRAIN + ["--steps", "2", "--dtype", "bfloat16", "--out", str(tmp_path / "run")])
    assert run.returncode == 0, run.stderr[-3000:]
    records = _metrics(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) and r["mismatch_logp_abs_mean"] > 0 for r in records[1:])
