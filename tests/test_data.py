"""Tests for data.py (hub table, local files, error messages, hold-out, evaluation sets, prompt
templates, the training order); no network."""

import csv
import json
import logging
import re
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from data import (DAPO_TEMPLATE, KNOWN, PROMPT_STYLES, QWEN_MATH_SYSTEM, Example, PromptSampler,
                  format_prompt, load_examples, load_set, problem_key, reward_style, save_examples,
                  split_holdout, synthetic_examples)

ROWS = [  # the third row has no answer and must be skipped
    {"problem": "What is 6 times 7?", "answer": "42"},
    {"problem": "Half of one?", "answer": "\\frac{1}{2}"},
    {"problem": "Unanswered?", "answer": None},
    {"problem": "What is 1+2?", "answer": "3"},
]
EXPECTED = [Example("What is 6 times 7?", "42"), Example("Half of one?", "\\frac{1}{2}"),
            Example("What is 1+2?", "3")]


def write_rows(path, rows):
    """Write rows as the format named by the path's suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_local_file_of_each_format(tmp_path, caplog, suffix):
    path = write_rows(tmp_path / f"problems{suffix}", ROWS)
    with caplog.at_level(logging.WARNING, logger="data"):
        examples = load_examples(path)
    assert examples == EXPECTED
    assert "skipped 1 of 4 rows" in caplog.text


def test_default_keys_are_tried_in_order(tmp_path):
    rows = [{"query": "q1", "prompt": "p1", "target": "7", "solution": "long solution"}]
    path = write_rows(tmp_path / "d.jsonl", rows)
    assert load_examples(path) == [Example("p1", "long solution")]   # prompt before query, solution before target


def test_explicit_and_nested_keys(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
             "reward_model": {"ground_truth": "4", "style": "rule"}, "answer": "not this"}]
    path = write_rows(tmp_path / "verl.jsonl", rows)
    assert load_examples(path, answer_key="reward_model.ground_truth") == [Example("2+2?", "4")]


def test_numeric_answer_columns_become_plain_strings(tmp_path):
    path = write_rows(tmp_path / "n.csv", [{"question": "a", "answer": 27}, {"question": "b", "answer": 2.5}])
    assert [e.answer for e in load_examples(path)] == ["27", "2.5"]   # the float column's 27.0 is 27


def test_missing_column_names_the_existing_ones(tmp_path):
    path = write_rows(tmp_path / "bad.jsonl", [{"text": "q", "label": "1"}])
    with pytest.raises(ValueError, match=r"question.*\['text', 'label'\].*--question-key"):
        load_examples(path)
    with pytest.raises(ValueError, match=r"no answer column 'final'.*'label'"):
        load_examples(path, question_key="text", answer_key="final")
    assert load_examples(path, question_key="text", answer_key="label") == [Example("q", "1")]


def test_file_where_no_row_has_an_answer(tmp_path):
    path = write_rows(tmp_path / "empty.jsonl", [{"question": "q", "answer": ""}])
    with pytest.raises(ValueError, match="no row with both"):
        load_examples(path)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="gsm8k.*amc23"):
        load_examples("gsm9k")
    with pytest.raises(ValueError, match="does not exist"):
        load_examples(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"must end in \.jsonl"):
        load_examples(str(tmp_path / "notes.txt"))


def test_known_table_matches_the_cards():
    assert set(KNOWN) == {"dapo-math", "gsm8k", "math500", "aime24", "aime25", "amc23"}
    columns = {name: (spec.hub_id, spec.split, spec.question, spec.answer) for name, spec in KNOWN.items()}
    assert columns["dapo-math"] == ("open-r1/DAPO-Math-17k-Processed", "train", "prompt", "solution")
    assert columns["amc23"] == ("math-ai/amc23", "test", "question", "answer")
    assert columns["aime25"] == ("math-ai/aime25", "test", "problem", "answer")
    assert KNOWN["gsm8k"].config == "main" and KNOWN["dapo-math"].config == "en"


def test_gsm8k_and_dapo_transforms():
    assert KNOWN["gsm8k"].answer_transform("3 + 4 = <<3+4=7>>7 boxes\n#### 7,425") == "7425"
    dapo_prompt = DAPO_TEMPLATE.format(problem="What is $1+1$?")
    assert KNOWN["dapo-math"].question_transform(dapo_prompt) == "What is $1+1$?"
    assert KNOWN["dapo-math"].question_transform("A bare problem.") == "A bare problem."


def test_unreachable_hub_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")  # no cached copy
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError) as error:
        load_examples("gsm8k")
    message = str(error.value)
    assert "openai/gsm8k" in message and "hub" in message
    assert "data.save_examples(data.load_examples('gsm8k', split='test'), 'gsm8k-test.jsonl')" in message
    assert message.endswith("(train.py --dataset gsm8k-test.jsonl, eval.py --datasets gsm8k-test.jsonl).")


def test_save_examples_round_trip(tmp_path):
    path = tmp_path / "saved.jsonl"
    save_examples(EXPECTED, path)
    assert load_examples(str(path)) == EXPECTED


def test_synthetic_dispatch():
    assert load_examples("synthetic", split="test", limit=5, seed=3) == synthetic_examples("test", n=5, seed=3)
    assert load_examples("synthetic", limit=4) == synthetic_examples("train", n=4, seed=0)


def test_limit_is_a_seeded_ordered_subset(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    path = write_rows(tmp_path / "ten.jsonl", rows)
    subset = load_examples(path, limit=4, seed=1)
    assert len(subset) == 4 and subset == load_examples(path, limit=4, seed=1)
    assert [int(e.answer) for e in subset] == sorted(int(e.answer) for e in subset)
    assert len(load_examples(path, limit=50)) == 10


def test_split_holdout():
    examples = [Example(f"q{i}", str(i)) for i in range(20)]
    train, held_out = split_holdout(examples, 5, seed=0)
    assert len(train) == 15 and len(held_out) == 5
    assert sorted(train + held_out, key=lambda e: int(e.answer)) == examples
    assert split_holdout(examples, 5, seed=0) == (train, held_out)
    assert split_holdout(examples, 5, seed=1)[1] != held_out
    with pytest.raises(ValueError, match="hold out"):
        split_holdout(examples, 20)


@pytest.fixture
def chat_tokenizer():
    """A word-level tokenizer with a Qwen2-style ChatML template, built without downloads."""
    vocab = {token: i for i, token in enumerate(["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", "What", "is"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="<|im_end|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                               "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                               "{% endif %}")
    return tokenizer


def test_format_prompt_qwen_math(chat_tokenizer):
    assert QWEN_MATH_SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."
    assert format_prompt(chat_tokenizer, "What is 2+2?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_format_prompt_dapo(chat_tokenizer):
    prompt = format_prompt(chat_tokenizer, "What is 2+2?", style="dapo")
    assert prompt == ("<|im_start|>user\nSolve the following math problem step by step. The last line of your "
                      "response should be of the form Answer: $Answer (without quotes) where $Answer is the "
                      "answer to the problem.\n\nWhat is 2+2?\n\nRemember to put your answer on its own line "
                      "after \"Answer:\".<|im_end|>\n<|im_start|>assistant\n")


def test_format_prompt_without_a_chat_template(chat_tokenizer):
    chat_tokenizer.chat_template = None
    assert format_prompt(chat_tokenizer, "What is 2+2?") == QWEN_MATH_SYSTEM + "\n\nWhat is 2+2?\n\n"
    assert format_prompt(None, "Q", style="dapo") == DAPO_TEMPLATE.format(problem="Q") + "\n\n"
    with pytest.raises(ValueError, match="qwen-math"):
        format_prompt(None, "Q", style="chatml")


def test_reward_style():
    assert [reward_style(s) for s in PROMPT_STYLES] == ["boxed", "answer"]
    with pytest.raises(ValueError, match="dapo"):
        reward_style("boxed")


def test_load_set_names_and_splits(tmp_path):
    assert load_set("synthetic", 3) == synthetic_examples("test", n=3)
    assert load_set("synthetic:train", 3) == synthetic_examples("train", n=3)
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n"
                            for i in range(5)))
    assert [e.answer for e in load_set(str(path), None)] == ["1", "2", "3", "4", "5"]
    assert len(load_set(str(path), 2)) == 2


def test_sampler_permutes_each_epoch_without_repeats_and_resumes():
    sampler = PromptSampler(n=10, seed=1)
    epochs = [[i for _ in range(3) for i in sampler.next(3)] for _ in range(3)]  # 9 of 10, tail dropped
    for order in epochs:
        assert len(set(order)) == 9
    assert epochs[0] != epochs[1]
    again = PromptSampler(n=10, seed=1)
    again.load_state_dict({"epoch": 1, "pos": 3})
    assert again.next(3) == epochs[1][3:6]
    assert PromptSampler(n=10, seed=2).next(3) != epochs[0][:3]


def test_text_files_that_are_not_utf8_or_empty_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"question": "1+1?", "answer": "2"}\n{"question": "caf\xe9?", "answer": "3"}\n')
    with pytest.raises(ValueError, match=r"Line 2 of .*bad.jsonl is not valid UTF-8"):
        load_examples(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_examples(str(empty))


def test_a_local_copy_of_the_original_dapo_set_is_prepared_like_the_hub_set(tmp_path):
    """The original DAPO-Math-17k (verl parquet): chat-message prompts that carry the DAPO
    instruction, each problem repeated, the answer under reward_model.ground_truth."""
    rows = [{"prompt": [{"role": "user", "content": DAPO_TEMPLATE.format(problem=p)}],
             "reward_model": {"ground_truth": a, "style": "rule"}}
            for p, a in [("What is 2+3?", "5"), ("What is 7*6?", "42")] * 3]
    path = tmp_path / "dapo-math-17k.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    examples = load_examples(str(path), answer_key="reward_model.ground_truth")
    assert examples == [Example("What is 2+3?", "5"), Example("What is 7*6?", "42")]
    assert format_prompt(None, examples[0].question, "dapo").count("Solve the following") == 1


def test_dict_and_list_cells_are_refused_naming_file_row_and_column(tmp_path):
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": ["4", "four"]}]
    path = write_rows(tmp_path / "lists.jsonl", rows)
    with pytest.raises(ValueError, match=r"^Row 2 of .*lists.jsonl, column 'answer', holds a list "
                                         r"\(\[\"4\", \"four\"\]\) where text is expected; give one "
                                         r"string or number per cell\.$"):
        load_examples(path)
    path = write_rows(tmp_path / "dicts.parquet", [{"problem": {"en": "1+1?"}, "answer": "2"}])
    with pytest.raises(ValueError, match=r"column 'problem', holds a dict .* --question-key problem\.en\.$"):
        load_examples(path)
    assert load_examples(path, question_key="problem.en") == [Example("1+1?", "2")]


def test_eval_datasets_columns_have_their_own_train_flags(tmp_path, capsys):
    import train   # train.py's command line: --dry-run loads the evaluation sets, not the weights

    path = write_rows(tmp_path / "held.jsonl", [{"text": "1+1?", "sol": "2"}, {"text": "2+3?", "sol": "5"}])
    assert train.main(["--eval-datasets", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "its columns are ['text', 'sol']. Pass --eval-question-key with one of them." in err
    assert train.main(["--eval-datasets", f"synthetic,{path}", "--eval-question-key", "text",
                       "--eval-answer-key", "sol", "--dry-run"]) == 0
    assert "plan:" in capsys.readouterr().out
    assert train.main(["--dataset", path, "--dry-run"]) == 2    # --dataset's own flag
    assert "Pass --question-key with one of them." in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_numbers_are_read_as_the_text_the_file_writes(tmp_path, suffix):
    path = tmp_path / f"exact{suffix}"
    answers = ["9007199254740993", "123456789012345678901234567890", "1e3", "0.1000", "-0"]
    if suffix == ".csv":
        path.write_text("question,answer\n" + "".join(f"q{i},{a}\n" for i, a in enumerate(answers)))
    else:
        rows = [f'{{"question": "q{i}", "answer": {a}}}' for i, a in enumerate(answers)]
        path.write_text("\n".join(rows) if suffix == ".jsonl" else "[" + ",".join(rows) + "]")
    assert [e.answer for e in load_examples(str(path))] == answers


@pytest.mark.parametrize("name, text", [("e.json", "[]"), ("e.json", "{}"), ("e.json", "{\"question\": []}"),
                                        ("e.csv", "question,answer\n")])
def test_a_valid_file_without_rows_is_not_called_invalid(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match="holds no rows|no row with both") as error:
        load_examples(str(tmp_path / name))
    assert "not valid" not in str(error.value)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": }\n')
    with pytest.raises(ValueError, match=r"^Line 2 of .*bad.jsonl is not valid JSON"):
        load_examples(str(path))


def test_an_existing_path_with_a_colon_is_a_path(tmp_path):
    path = write_rows(tmp_path / "run:2026.jsonl", ROWS)
    assert load_set(path, None) == EXPECTED


def test_one_problem_under_equal_answers_is_one_problem_and_never_both_held_out_and_trained(tmp_path, caplog):
    rows = [{"question": "What is 1+1?", "answer": a} for a in ("2", "2.0", "\\boxed{2}")]
    rows += [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(2, 8)]
    path = write_rows(tmp_path / "twos.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="data"):
        examples = load_examples(path)
    assert len(examples) == 7 and "dropped 2 repeated problems" in caplog.text
    for seed in range(10):
        train, held = split_holdout(examples, 3, seed)
        assert not {problem_key(e) for e in train} & {problem_key(e) for e in held}


def test_an_evaluation_set_that_overlaps_the_training_set_is_warned_about(tmp_path, caplog):
    import train   # --dry-run loads the data sets, not the weights

    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(8)]
    path = write_rows(tmp_path / "train.jsonl", rows)
    same = write_rows(tmp_path / "same.jsonl", [{"question": "What  is 3+3?", "answer": "6.0"}, *rows[5:]])
    with caplog.at_level(logging.WARNING, logger="data"):
        assert train.main(["--dataset", path, "--eval-datasets", f"{path},{same},synthetic",
                           "--eval-every", "5", "--dry-run"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "also training problems" in r.getMessage()]
    assert warnings == [f"warning: 8 of the 8 problems of evaluation set {path} are also training problems "
                        f"(the same question and answer); its numbers partly measure problems the run trains on",
                        f"warning: 4 of the 4 problems of evaluation set {same} are also training problems "
                        f"(the same question and answer); its numbers partly measure problems the run trains on"]


def test_a_prompt_longer_than_the_models_context_is_refused_naming_file_and_row(tmp_path, capsys):
    import eval as evaluation
    import train

    shipped = str(Path(train.__file__).resolve().parent / "tiny-qwen2")    # its context: 512 tokens
    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(4)]
    rows.insert(2, {"question": "Tom has 3 apples. " * 300, "answer": "3"})
    path = write_rows(tmp_path / "long.jsonl", rows)
    huge = write_rows(tmp_path / "huge.jsonl", [{"question": "x" * 1_000_000, "answer": "1"}])
    want = rf"^error: row 3 of {path} is a prompt of \d+ tokens, longer than the 512 of the model's context"
    assert train.main(["--model", shipped, "--dataset", path, "--prompts-per-step", "2", "--out",
                       str(tmp_path / "run"), "--eval-every", "0", "--device", "cpu", "--steps", "1",
                       "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert re.match(want, err) and err.count("\n") == 1
    assert not (tmp_path / "run" / "checkpoint-1").exists()
    for data_set in (path, huge):
        assert evaluation.cli(["--model", shipped, "--datasets", data_set, "--out", str(tmp_path / "e.json"),
                               "--device", "cpu", "--n", "1", "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: row ") and "longer than the 512 of the model's context" in err
    assert not (tmp_path / "e.json").exists()
