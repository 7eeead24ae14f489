"""Tests for policy.py: the one device / dtype rule and model loading."""

import math
import shutil

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import config
import eval as evaluation
import policy
import train
from conftest import CPU_AMP, rollout_with_advantages


def test_dtype_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert policy.compute_dtype("auto", cpu) == torch.float32
    assert policy.compute_dtype("auto", cuda) == torch.bfloat16
    assert policy.compute_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        policy.compute_dtype("int8", cpu)
    assert policy.pick_device("cpu") == cpu


def test_autocast_is_off_for_float32_and_on_for_bf16():
    x = torch.randn(4, 4)
    with policy.autocast(torch.device("cpu"), torch.float32):
        assert (x @ x).dtype == torch.float32
    with policy.autocast(torch.device("cpu"), torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16


def test_load_policy_in_the_asked_dtype_and_a_clear_error(tiny_path, tmp_path):
    model, tokenizer = policy.load_policy(tiny_path, torch.device("cpu"), torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16 and tokenizer.eos_token_id is not None
    with pytest.raises(ValueError, match="could not load the model"):
        policy.load_policy(str(tmp_path / "missing"), torch.device("cpu"))


def test_folders_that_are_not_a_loadable_model_say_what_to_pass(tiny_path, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a run folder, not a model: pass its final/"):
        policy.load_policy(str(run), torch.device("cpu"))
    with pytest.raises(ValueError, match="no config.json"):
        policy.load_policy(str(tmp_path), torch.device("cpu"))
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_path, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="incomplete or damaged"):
        policy.load_policy(str(damaged), torch.device("cpu"))


def test_gradient_checkpointing_uses_the_current_api(tiny_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)     # the deprecated call warns
        model, _ = policy.load_policy(tiny_path, torch.device("cpu"), gradient_checkpointing=True)
    assert model.is_gradient_checkpointing


def test_sampling_copy_is_bf16_tied_and_refreshed_from_the_masters(tiny_path):
    model, _ = policy.load_policy(tiny_path, torch.device("cpu"))
    assert policy.sampling_copy(model, torch.float32) is None
    sampler = policy.sampling_copy(model, torch.bfloat16)
    assert sampler.lm_head.weight is sampler.model.embed_tokens.weight or not model.config.tie_word_embeddings
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    policy.refresh(sampler, model)
    for theirs, ours in zip(sampler.parameters(), model.parameters(), strict=True):
        assert theirs.dtype == torch.bfloat16 and torch.equal(theirs, ours.to(torch.bfloat16))
    assert all(b.dtype == torch.float32 for n, b in sampler.named_buffers() if "inv_freq" in n)


def test_dropout_is_off_so_an_on_policy_step_has_ratio_exactly_1(tiny_path, tmp_path):
    """A GPT-2 with dropout 0.1 everywhere (attention's functional dropout included): scored in
    eval mode, updated in train mode, as train.py does. With dropout left on, this strictly
    on-policy step measured ratio 1.0003 and approx_kl 8.5e-4; off, the log-probs are bit for bit
    those it was scored with."""
    tokenizer = policy.load_policy(tiny_path, torch.device("cpu"))[1]
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2,
                                      n_head=2, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                                      eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    cfg = config.parse_args(["--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "8"])
    for checkpointing in (False, True):                 # checkpointing needs train mode: still exact
        model, _ = policy.load_policy(str(tmp_path / "gpt2"), torch.device("cpu"),
                                      gradient_checkpointing=checkpointing)
        assert model.config.attn_pdrop == 0 and model.config.resid_pdrop == 0
        assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
        batch = rollout_with_advantages(model, tokenizer, cfg)
        metrics = train.update_step(model, torch.optim.SGD(model.parameters(), lr=0.1), batch, cfg, CPU_AMP)
        assert metrics["ratio_mean"] == 1.0 and metrics["approx_kl"] == 0.0, metrics
        assert math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0


def test_a_run_folder_as_the_model_is_named_in_train_dry_run_and_eval(tiny_path, tmp_path, capsys):
    """Its own config.json (the run's) used to defeat the check: "Unrecognized model", or
    "incomplete or damaged"."""
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "config.json").write_text('{"method": "grpo", "label": "grpo", "steps": 2}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    said = f"{run} is a run folder, not a model: pass its final/ (or one of its checkpoint-N/ folders)"
    for extra in ([], ["--dry-run"]):
        assert train.main(["--model", str(run), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="is a run folder, not a model: pass its final/"):
        evaluation.main(["--model", str(run), "--out", str(tmp_path / "out" / "eval.json")])
    assert not (tmp_path / "out").exists()           # refused before anything was written
    trainer_output = tmp_path / "trainer"             # a model beside its checkpoints: loads
    shutil.copytree(tiny_path, trainer_output)
    (trainer_output / "checkpoint-2").mkdir()
    policy.check_model_folder(str(trainer_output))
