"""Tests for eval.py: pass@k against exact enumeration, evaluation, and the command line
(end to end on the shipped tiny-qwen2, as a user runs it).

The grading test uses a real Qwen2ForCausalLM whose weights are set by hand so that it is a
bigram model that always answers "\\boxed{7}" and stops: the per-problem counts it must produce
are then known exactly, so a mistake in grouping, grading or counting fails the test.
"""

import itertools
import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import build_tiny_model
import data
import eval as ev
import grpo
import policy

REPO = Path(__file__).resolve().parent.parent
ANSWER = "\\boxed{7}"  # the bigram model's only response


# ----- pass@k -----

def enumerated_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def test_pass_at_k_matches_enumeration_of_all_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert grpo.pass_at_k(n, c, k) == pytest.approx(
                    float(enumerated_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(512, 3, 32), (300, 150, 100), (1000, 1, 1), (400, 397, 3)])
def test_pass_at_k_is_stable_for_n_in_the_hundreds(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))  # exact big-integer binomials
    assert grpo.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


def test_pass_at_k_edge_cases():
    assert grpo.pass_at_k(16, 0, 4) == 0.0  # c = 0
    assert grpo.pass_at_k(16, 16, 4) == 1.0  # c = n
    assert grpo.pass_at_k(16, 1, 16) == 1.0  # k = n with one correct sample
    assert grpo.pass_at_k(16, 0, 16) == 0.0  # k = n with none
    assert grpo.pass_at_k(16, 5, 1) == pytest.approx(5 / 16)  # pass@1 is the accuracy
    with pytest.raises(ValueError, match="n=4"):
        grpo.pass_at_k(4, 2, 5)  # k > n
    with pytest.raises(ValueError):
        grpo.pass_at_k(4, 2, 0)
    with pytest.raises(ValueError):
        grpo.pass_at_k(4, 5, 1)  # c > n


def test_pass_ks_are_powers_of_two_then_n():
    assert ev.pass_ks(1) == [1]
    assert ev.pass_ks(2) == [1, 2]
    assert ev.pass_ks(6) == [1, 2, 4, 6]
    assert ev.pass_ks(32) == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError):
        ev.pass_ks(0)


def test_aggregate_averages_over_problems():
    out = ev.aggregate([0, 2, 4], n=4)
    assert list(out) == ["avg@4", "pass@1", "pass@2", "pass@4"]
    assert out["avg@4"] == pytest.approx(0.5)
    assert out["pass@1"] == pytest.approx(0.5)
    assert out["pass@2"] == pytest.approx((0 + 5 / 6 + 1) / 3)  # c=2 of 4: 1 - C(2,2)/C(4,2)
    assert out["pass@4"] == pytest.approx(2 / 3)


# ----- end to end -----

@pytest.fixture(scope="module")
def boxed7_model(tmp_path_factory):
    """A tiny Qwen2 + the project's byte-level tokenizer, saved to a folder; the model is a
    bigram that answers ANSWER to any prompt and stops.

    Attention and MLP outputs are zeroed (o_proj, down_proj), so the last hidden state is the
    normalised embedding of the current token. The tokens of the chain (the prompt's last token,
    ANSWER's tokens, EOS) get one-hot embeddings, and the lm_head maps each to the next one.
    """
    texts = [e.question for e in data.synthetic_examples("train", n=200)]
    tokenizer = build_tiny_model.build_tokenizer(texts, vocab_size=300)
    last = tokenizer(data.format_prompt(tokenizer, "1+6?"), add_special_tokens=False).input_ids[-1]
    chain = [last, *tokenizer(ANSWER, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain) > 5  # a bigram needs distinct tokens
    hidden = 64
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for j, (cur, nxt) in enumerate(itertools.pairwise(chain)):
            model.model.embed_tokens.weight[cur, j] = 1.0
            model.lm_head.weight[nxt, j] = 10.0  # logit gap 10 * sqrt(hidden) = 80
    folder = tmp_path_factory.mktemp("boxed7")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_evaluate_counts_correct_samples_per_problem(boxed7_model):
    model, tokenizer = policy.load_policy(str(boxed7_model), torch.device("cpu"))
    model.train()
    examples = [data.Example("1+6?", "7"), data.Example("2+2?", "4"), data.Example("3+4?", "7"),
                data.Example("9-1?", "8")]
    out = ev.evaluate(model, tokenizer, examples, n=3, temperature=0.7, top_p=1.0,
                      max_new_tokens=20, batch_size=6, seed=0)  # 2 problems per generate call
    assert out["correct"] == [3, 0, 3, 0]
    assert out["num_problems"] == 4 and out["n"] == 3
    assert out["avg@3"] == pytest.approx(0.5)
    assert out["pass@1"] == pytest.approx(0.5) and out["pass@3"] == pytest.approx(0.5)
    answer_tokens = len(tokenizer(ANSWER, add_special_tokens=False).input_ids)
    assert out["mean_response_len"] == answer_tokens + 1  # the EOS counts as a response token
    assert out["truncated_frac"] == 0.0
    assert model.training  # the caller's mode is restored

    short = ev.evaluate(model, tokenizer, examples[:1], n=2, temperature=0.7, top_p=1.0,
                        max_new_tokens=3, batch_size=8, seed=0)
    assert short["correct"] == [0] and short["truncated_frac"] == 1.0
    assert short["mean_response_len"] == 3


def test_evaluate_rejects_n_below_one(boxed7_model):
    model, tokenizer = policy.load_policy(str(boxed7_model), torch.device("cpu"))
    with pytest.raises(ValueError, match="at least 1"):
        ev.evaluate(model, tokenizer, [data.Example("1+6?", "7")], n=0, temperature=1.0,
                    top_p=1.0, max_new_tokens=4, batch_size=4, seed=0)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(REPO / "eval.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_on_the_shipped_model(tmp_path):
    out_file = tmp_path / "eval.json"          # --out names a folder: the file goes inside it
    proc = run_cli("--n", "2", "--limit", "3", "--max-new-tokens", "64", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "synthetic" in proc.stdout and "pass@2" in proc.stdout
    saved = json.loads(out_file.read_text())
    assert saved["settings"]["n"] == 2 and saved["settings"]["model"] == str(ev.DEFAULT_MODEL)
    res = saved["results"]["synthetic"]
    assert set(res) == {"num_problems", "n", "avg@2", "pass@1", "pass@2", "mean_response_len",
                        "truncated_frac", "correct", "distinct", "distinct_correct"}
    # one answer per synthetic problem: a problem solved at all has exactly one distinct solution
    assert res["distinct"] == [int(c > 0) for c in res["correct"]]
    assert res["num_problems"] == 3 and res["n"] == 2
    assert len(res["correct"]) == 3 and all(0 <= c <= 2 for c in res["correct"])
    assert res["avg@2"] == pytest.approx(sum(res["correct"]) / 6)
    assert res["pass@1"] == pytest.approx(res["avg@2"])
    assert res["pass@2"] == pytest.approx(sum(c > 0 for c in res["correct"]) / 3)
    assert 0 < res["mean_response_len"] <= 64 and 0 <= res["truncated_frac"] <= 1


def test_cli_user_errors_give_one_clear_message(tmp_path):
    proc = run_cli("--model", "no-such-org/no-such-model-xyz", "--n", "2", "--limit", "1",
                   "--out", str(tmp_path / "e.json"))
    assert proc.returncode == 2                  # a user mistake, as in train.py and plot.py
    assert "error: could not load the model 'no-such-org/no-such-model-xyz'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(ValueError, match="--n must be at least 1, got 0"):  # before any loading
        ev.main(["--n", "0"])
    proc = run_cli("--model", str(tmp_path), "--n", "2", "--limit", "1")    # not a model folder
    assert "no config.json" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="cannot write the results"):       # before any loading
        ev.main(["--out", str(tmp_path / "a-file" / "e.json"), "--model", str(tmp_path / "none")])
    with pytest.raises(ValueError, match="Unknown data set 'nope'"):
        ev.main(["--datasets", "synthetic,nope"])


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ev.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--datasets" in capsys.readouterr().out


# ----- mistakes: one line, exit status 2 (as train.py and plot.py), before anything loads -----

def mistake(capsys, argv: list[str]) -> str:
    """Run eval.py's command line on argv; assert it exits 2 with one line; return that line."""
    assert ev.cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags,message", [
    (["--temperature", "inf"], "--temperature must be a finite number >= 0 (0: greedy decoding), got inf."),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--temperature", "-0.5"], "--temperature must be a finite number >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0."),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5."),
    (["--n", "0"], "--n must be at least 1, got 0."),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0."),
    (["--batch-size", "-1"], "--batch-size must be at least 1, got -1."),
    (["--limit", "0"], "--limit must be at least 1, got 0."),
])
def test_sampling_flags_are_checked_before_the_data_and_the_model(flags, message, tmp_path, capsys):
    # neither the model nor the data set exists: the flag must be what fails, and nothing is written
    argv = ["--model", str(tmp_path / "no-model"), "--datasets", str(tmp_path / "none.jsonl"),
            "--out", str(tmp_path / "out" / "e.json"), *flags]
    assert message in mistake(capsys, argv)
    assert list(tmp_path.iterdir()) == []


def test_device_choices_are_checked_as_in_train(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ev.cli(["--device", "gpu"])
    assert exit_info.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert "--device cuda was asked for but no CUDA device" in mistake(capsys, ["--device", "cuda"])


def test_no_output_folder_is_created_before_the_data_set_fails(tmp_path, capsys):
    out = tmp_path / "results" / "deep" / "e.json"
    message = mistake(capsys, ["--datasets", str(tmp_path / "missing.jsonl"), "--out", str(out)])
    assert "missing.jsonl does not exist" in message
    assert not (tmp_path / "results").exists()


def test_column_flags_name_the_columns_of_local_files(boxed7_model, tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "1+6?", "sol": "7"}\n{"text": "2+2?", "sol": "4"}\n')
    assert "its columns are ['text', 'sol']. Pass --question-key with one of them." in \
        mistake(capsys, ["--datasets", str(path)])
    assert "no answer column 'solution'; its columns are ['text', 'sol']. Pass --answer-key" in \
        mistake(capsys, ["--datasets", str(path), "--question-key", "text", "--answer-key", "solution"])
    results = ev.main(["--model", str(boxed7_model), "--datasets", str(path), "--question-key", "text",
                       "--answer-key", "sol", "--n", "2", "--max-new-tokens", "12", "--device", "cpu",
                       "--out", str(tmp_path / "e.json")])
    assert results[str(path)]["correct"] == [2, 0]      # the model answers 7 to everything


def test_dict_and_list_answers_are_refused_with_file_row_and_column(tmp_path, capsys):
    path = tmp_path / "nested.jsonl"
    path.write_text('{"question": "1+6?", "answer": {"value": "7"}}\n'
                    '{"question": "2+2?", "answer": {"value": "4"}}\n')
    assert mistake(capsys, ["--datasets", str(path)]) == (
        f"error: Row 1 of {path}, column 'answer', holds a dict ({{\"value\": \"7\"}}) where text is "
        f"expected; give one string or number per cell, or name one of its fields with --answer-key "
        f"answer.value.")


def test_samples_of_a_problem_come_in_chunks_of_batch_size(boxed7_model, monkeypatch):
    model, tokenizer = policy.load_policy(str(boxed7_model), torch.device("cpu"))
    examples = [data.Example("1+6?", "7"), data.Example("2+2?", "4")]
    out = ev.evaluate(model, tokenizer, examples, n=5, temperature=0.7, top_p=1.0,
                      max_new_tokens=20, batch_size=2, seed=0)     # 3 calls of 2, 2, 1 per problem
    assert out["correct"] == [5, 0] and out["avg@5"] == 0.5 and out["pass@4"] == 0.5
    answer_tokens = len(tokenizer(ANSWER, add_special_tokens=False).input_ids)
    assert out["mean_response_len"] == answer_tokens + 1 and out["truncated_frac"] == 0.0

    calls, generate = [], ev.rollout.generate

    def three_calls(*args, **kwargs):   # the real generate, stopped after three calls
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append((len(args[2]), kwargs["group_size"], kwargs["seed"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(ev.rollout, "generate", three_calls)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(model, tokenizer, examples, n=10 ** 9, temperature=0.7, top_p=1.0,
                    max_new_tokens=4, batch_size=4, seed=10)
    assert calls == [(1, 4, 10), (1, 4, 11), (1, 4, 12)]     # one problem, 4 samples a call


# ----- a run's model is evaluated with the run's response budget, prompt style and box rule -----

def fake_run(root: Path, **config) -> Path:
    """A train.py run folder (its config.json has no model_type) holding final/ and checkpoint-5/."""
    for folder in ("final", "checkpoint-5"):
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_a_runs_model_takes_the_runs_budget_style_and_box_rule(tmp_path, capsys):
    run = fake_run(tmp_path / "run", max_new_tokens=48, eval_max_new_tokens=None,
                   prompt_style="dapo", box_rule="strict")
    for model in (run / "final", run / "checkpoint-5"):
        args = ev.parse_args(["--model", str(model)])
        assert (args.max_new_tokens, args.prompt_style, args.box_rule) == (48, "dapo", "strict")
    assert "from the training run: --max-new-tokens 48, --prompt-style dapo, --box-rule strict" \
        in capsys.readouterr().out
    args = ev.parse_args(["--model", str(run / "final"), "--max-new-tokens", "300", "--box-rule", "last"])
    assert (args.max_new_tokens, args.prompt_style, args.box_rule) == (300, "dapo", "last")  # flags win
    other = fake_run(tmp_path / "other", max_new_tokens=48, eval_max_new_tokens=96)
    assert ev.parse_args(["--model", str(other / "final")]).max_new_tokens == 96  # the run's eval budget
    assert ev.parse_args(["--model", str(other / "final")]).prompt_style == "qwen-math"  # not recorded


def test_a_model_outside_a_run_takes_eval_pys_own_defaults(tmp_path, capsys):
    args = ev.parse_args([])                                       # the shipped tiny model
    assert (args.max_new_tokens, args.prompt_style, args.box_rule) == (512, "qwen-math", "last")
    hf_output = tmp_path / "trainer"                               # a Trainer's folder: its config.json
    fake_run(hf_output, model_type="qwen2", max_new_tokens=48)     # is a model's, not a run's
    assert ev.parse_args(["--model", str(hf_output / "final")]).max_new_tokens == 512
    broken = fake_run(tmp_path / "broken")
    (broken / "config.json").write_text("[not json")
    assert ev.parse_args(["--model", str(broken / "final")]).max_new_tokens == 512
    assert ev.parse_args(["--model", "Qwen/Qwen2.5-Math-7B"]).max_new_tokens == 512   # a hub id
    assert "from the training run" not in capsys.readouterr().out


def test_each_evaluation_has_its_own_file_and_none_is_overwritten(tmp_path, monkeypatch):
    assert ev.default_output("runs/x/final", ["synthetic"], 4, 0) == \
        Path("out/eval-x-final-synthetic-n4-seed0.json")
    assert ev.default_output("Qwen/Qwen2.5-1.5B", ["countdown:hard", "data/mine.jsonl"], 64, 2) == \
        Path("out/eval-Qwen2.5-1.5B-countdown-hard+mine-n64-seed2.json")
    out = tmp_path / "e.json"
    out.write_text("{}")
    with pytest.raises(ValueError, match="already holds results; pass --overwrite"):
        ev.main(["--out", str(out), "--model", str(tmp_path / "none")])   # before any loading
    assert ev.writable_output(out, overwrite=True) == out
    # a second evaluation writing the same file at the same time is refused, naming the first
    held = tmp_path / "busy.json"
    proc = subprocess.Popen([sys.executable, "-c", f"import eval, time; eval.hold_output(eval.Path({str(held)!r})); "
                             "print('held', flush=True); time.sleep(30)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=r"busy.json is being written by another evaluation \(pid \d+\)"):
            ev.hold_output(held)
    finally:
        proc.kill()
        proc.wait()
    ev.hold_output(held)          # the kernel released the killed holder's lock


def test_results_are_written_whole_and_replace_only_when_asked(tmp_path):
    out = tmp_path / "r.json"
    args = ["--n", "1", "--limit", "1", "--max-new-tokens", "8", "--out", str(out), "--device", "cpu"]
    ev.main(args)
    first = json.loads(out.read_text())
    assert not list(tmp_path.glob("*.partial")) and first["results"]["synthetic"]["n"] == 1
    assert "overwrite" not in first["settings"]
    with pytest.raises(ValueError, match="already holds results"):
        ev.main(args)
    ev.main([*args, "--overwrite"])
    assert json.loads(out.read_text())["results"]["synthetic"]["n"] == 1
