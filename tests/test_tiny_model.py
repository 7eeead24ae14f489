"""The shipped policy `tiny-qwen2/` and the synthetic task it was warm-started on."""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

import build_tiny_model
import data
import rewards

FOLDER = Path(__file__).resolve().parent.parent / "tiny-qwen2"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(FOLDER, local_files_only=True)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(FOLDER, local_files_only=True).eval()


def signature(example: data.Example) -> tuple:
    """The arithmetic of a problem (start, signed operands), which decides its split."""
    steps = data.synthetic_steps(example.question)
    return (steps[0][0], *(r if op == "+" else -r for _, op, r in steps))


# ----- the folder -----

def test_folder_is_small_and_complete():
    names = {p.name for p in FOLDER.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 20 * 2**20


def test_loads_offline_as_qwen2(model, tokenizer):
    assert isinstance(model, Qwen2ForCausalLM)
    assert 1e6 <= sum(p.numel() for p in model.parameters()) <= 10e6
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_chat_template_is_qwen_style(tokenizer):
    prompt = data.format_prompt(tokenizer, "What is 2+2?", "qwen-math")
    assert prompt.startswith("<|im_start|>system\nPlease reason step by step")
    assert prompt.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_tokenizer_round_trips_the_task_text(tokenizer):
    rng = random.Random(0)
    examples = data.synthetic_examples("train", n=20) + data.synthetic_examples("test", n=20)
    texts = [e.question for e in examples]
    texts += [data.format_prompt(tokenizer, e.question, "qwen-math") for e in examples]
    texts += [build_tiny_model.target_response(e.question, rng, slip=0.5) for e in examples]
    texts.append("Some text it never saw: é, 中文, tabs\tand  double  spaces.\n")
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # Digits are single tokens, so the arithmetic is written digit by digit.
    assert len(tokenizer.encode("1234567890", add_special_tokens=False)) == 10
    # The EOS ending a response disappears from the decoded text that rewards.py grades.
    response = build_tiny_model.target_response(examples[0].question, rng, slip=0.0)
    ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == response


def test_greedy_responses_are_boxed_gradable_and_right_where_the_teacher_was(model, tokenizer):
    # problems whose verbs the teacher never misreads: the greedy answer is mostly right there
    examples = [e for e in data.synthetic_examples("test", n=100)
                if not set(data.synthetic_verbs(e.question)) & set(build_tiny_model.MISREAD_VERBS)][:8]
    prompts = [data.format_prompt(tokenizer, e.question, "qwen-math") for e in examples]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=48)
    responses = out[:, enc.input_ids.shape[1]:]
    assert (responses == tokenizer.eos_token_id).any(-1).all(), "every response ends with EOS"
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    assert all("\\boxed{" in t for t in texts), texts
    scores = [rewards.math_reward(t, e.answer) for t, e in zip(texts, examples, strict=True)]
    assert set(scores) <= {0.0, 1.0}
    assert len(examples) == 8 and sum(scores) >= 6, list(zip(texts, [e.answer for e in examples], strict=True))


def test_build_report_leaves_room_for_rl():
    report = json.loads((FOLDER / "build_report.json").read_text())
    assert report["k"] == 16 and report["test_problems"] == 300
    assert 0.15 <= report["avg_at_k"] <= 0.60
    assert report["mean_response_entropy_nats"] >= 0.1


# ----- the synthetic task -----

def test_synthetic_splits_are_disjoint_for_any_seeds():
    train = {signature(e) for s in (0, 1) for e in data.synthetic_examples("train", seed=s)}
    test = {signature(e) for s in (0, 1) for e in data.synthetic_examples("test", seed=s)}
    assert len(test) > 100
    assert not train & test


def test_synthetic_examples_are_deterministic_and_seeded():
    assert data.synthetic_examples("train", n=50) == data.synthetic_examples("train", n=50)
    assert data.synthetic_examples("test", n=50, seed=1) != data.synthetic_examples("test", n=50)
    assert len(data.synthetic_examples("train")) == 4000
    assert len(data.synthetic_examples("test")) == 300
    assert len({e.question for e in data.synthetic_examples("train")}) == 4000


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_synthetic_answers_follow_the_steps(difficulty):
    for e in data.synthetic_examples("test", n=100, difficulty=difficulty):
        steps = data.synthetic_steps(e.question)
        assert len(steps) == difficulty
        left = steps[0][0]
        for start, op, right in steps:
            assert start == left
            left = left + right if op == "+" else left - right
            assert left >= 0
        assert e.answer == str(left)


def test_teacher_slips_change_the_answer():
    question = data.synthetic_examples("train", n=1)[0].question
    clean = build_tiny_model.target_response(question, random.Random(0), slip=0.0)
    slipped = build_tiny_model.target_response(question, random.Random(0), slip=1.0)
    answer = data.synthetic_examples("train", n=1)[0].answer
    assert rewards.math_reward(clean, answer) == 1.0
    assert rewards.math_reward(slipped, answer) == 0.0


def test_teacher_misreads_only_its_verbs_and_reverses_their_sign():
    for e in data.synthetic_examples("train", n=200):
        misread = build_tiny_model.target_response(e.question, random.Random(1), slip=0.0, misread=1.0)
        written = re.findall(r"\d+([+-])\d+=", misread)
        steps, verbs = data.synthetic_steps(e.question), data.synthetic_verbs(e.question)
        assert len(written) == len(steps) == len(verbs)
        for (_, op, _), verb, sign in zip(steps, verbs, written, strict=True):
            if verb not in build_tiny_model.MISREAD_VERBS:
                assert sign == op
        if verbs[0] in ("gives", "sells"):    # a subtraction can always be misread as an addition
            assert written[0] == "+"


def test_teacher_styles_change_the_wording_not_the_answer():
    e = data.synthetic_examples("train", n=1)[0]
    texts = {build_tiny_model.target_response(e.question, random.Random(seed), slip=0.0, styles=True)
             for seed in range(200)}
    assert len(texts) == len(build_tiny_model.SEPARATORS) * len(build_tiny_model.ENDINGS)
    assert all(rewards.math_reward(t, e.answer) == 1.0 for t in texts)
    plain = build_tiny_model.target_response(e.question, random.Random(0), slip=0.0)
    assert plain.count(", ") == 1 and plain.endswith(f". \\boxed{{{e.answer}}}")


def test_synthetic_verbs_match_the_steps():
    for e in data.synthetic_examples("test", n=50, difficulty=3):
        verbs = data.synthetic_verbs(e.question)
        ops = [op for _, op, _ in data.synthetic_steps(e.question)]
        assert len(verbs) == 3
        assert ops == ["+" if v in ("buys", "finds", "gets") else "-" for v in verbs]


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.synthetic_examples("validation")
    with pytest.raises(ValueError, match="difficulty"):
        data.synthetic_examples("train", difficulty=0)


def test_build_script_help():
    result = subprocess.run([sys.executable, "build_tiny_model.py", "--help"], capture_output=True,
                            text=True, cwd=FOLDER.parent, timeout=120)
    assert result.returncode == 0 and "--slip" in result.stdout
