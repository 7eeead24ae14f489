"""Tests for memory.py: the Qwen2.5 shapes against models built on the meta device, and the
arithmetic of each part on hand-computed cases."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import memory


@pytest.mark.parametrize("name", list(memory.QWEN25))
def test_qwen25_shapes_match_models_built_from_their_configs(name):
    layers, hidden, heads, kv_heads, mlp, tied = memory.QWEN25_CONFIGS[name]
    config = Qwen2Config(vocab_size=151_936, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=mlp, tie_word_embeddings=tied)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    assert memory.shape_of(config, params) == memory.QWEN25[name]


def test_parts_by_hand():
    shape = memory.Shape(params=1000, layers=2, hidden=8, kv_heads=2, head_dim=4, vocab=100)
    parts = memory.gpu_bytes(shape, world_size=2, gen_batch=3, seq_len=10, micro_batch=1, chunk=5,
                             gradient_checkpointing=True, bf16=True)
    assert parts["weights, gradients, AdamW"] == 16 * 1000 / 2
    assert parts["bf16 weight copies"] == 2 * 1000     # FSDP2: the sampling copy only
    one = memory.gpu_bytes(shape, world_size=1, gen_batch=3, seq_len=10, micro_batch=1, chunk=5,
                           gradient_checkpointing=True, bf16=True)
    assert one["bf16 weight copies"] == 4 * 1000        # + autocast's cast of the weights
    assert one["weights, gradients, AdamW"] == 16 * 1000
    assert parts["KV cache"] == 2 * 2 * 2 * 4 * 2 * 3 * 10
    assert parts["statistics' chunks"] == 3 * 5 * 100 * 4
    assert parts["activations"] == 2 * 10 * 8 * 2 + 20 * 10 * 8 * 2
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    disk = memory.disk_bytes(1000, keep_last=2, native_bytes=2)
    assert disk == {"checkpoint": 12_000, "final": 2000, "run": 3 * 12_000 + 2000}
    assert memory.disk_bytes(1000, keep_last=1, save_optimizer=False)["checkpoint"] == 4000


def test_the_plan_warns_when_evaluation_outweighs_training():
    import config
    from transformers import Qwen2Config
    model_config = Qwen2Config(vocab_size=100, hidden_size=8, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1)
    cfg = config.parse_args(["--eval-every", "1", "--eval-n", "4"])
    text = memory.plan(cfg, model_config, 1000, {"test": list(range(300))})
    assert "a step generates 64 sequences of up to 48 tokens" in text
    assert "an evaluation 1200 sequences of up to 48, every 1 steps" in text
    assert "warning: each evaluation generates up to 57,600 tokens" in text
    cfg = config.parse_args(["--eval-every", "50", "--eval-n", "4"])
    assert "warning" not in memory.plan(cfg, model_config, 1000, {"test": list(range(300))})


def test_a_micro_batch_larger_than_the_batch_plans_for_the_batch():
    import config
    from transformers import Qwen2Config
    model_config = Qwen2Config(vocab_size=100, hidden_size=8, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1)
    batch = ["--prompts-per-step", "2", "--group-size", "2", "--gen-batch-size", "4"]
    plans = [memory.plan(config.parse_args([*batch, "--micro-batch-size", size]), model_config, 1000, {})
             for size in ("4", "1000")]
    assert plans[0] == plans[1]          # 4 sequences a step, whatever the flag allows


def test_the_gpu_acceptance_step_runs_on_a_cpu_with_shrunk_models():
    import bench_gpu
    (row,) = bench_gpu.bench_gpu(["Qwen2.5-0.5B"], max_new_tokens=4, prompts=2, group=2, layers=1)
    assert row["response_tokens"] == 2 * 2 * 4            # the EOS is suppressed: full length
    assert row["step_s"] > 0 and row["estimate_gb"] > 0 and row["layers"] == 1


def test_engine_rows_give_both_engines_side_by_side():
    import bench_gpu
    import config
    import policy
    model, tokenizer = policy.load_policy(config.parse_args([]).model, torch.device("cpu"))
    rows = bench_gpu.bench_engines(model, tokenizer, [2, 3], max_new_tokens=6)
    assert [(r["engine"], r["batch_size"]) for r in rows] == [
        ("generate", 2), ("generate", 3), ("paged", 2), ("paged", 3)]
    for r in rows:
        assert 0 < r["tokens"] <= r["batch_size"] * 6 and r["max_len"] <= 6
        assert r["tokens_per_s"] == r["tokens"] / r["seconds"]
    assert [r["ratio_vs_generate"] for r in rows[:2]] == [1.0, 1.0]


def test_long_tailed_eos_sets_the_mean_eos_probability_on_its_sample():
    import bench_gpu
    model = bench_gpu.qwen25_shaped("Qwen2.5-0.5B", layers=1)
    eos = 7
    torch.manual_seed(1)
    ids = torch.randint(0, bench_gpu.VOCAB, (4, 128))          # what long_tailed_eos draws
    ids[ids == eos] = 0
    with torch.no_grad():
        before = model(input_ids=ids).logits.softmax(-1)[..., eos].mean().item()
    torch.manual_seed(1)
    scale = bench_gpu.long_tailed_eos(model, eos, mean_tokens=20)
    with torch.no_grad():
        after = model(input_ids=ids).logits.softmax(-1)[..., eos].mean().item()
    assert before < 1e-4 and scale > 1      # random weights: about 1 / V
    assert after == pytest.approx(1 / 20, rel=1e-3)


def test_sampling_bytes_of_both_ways_by_hand():
    # 10 parameters: a root of 4 and 2 layers of 3; 2 processes; 5 decoding forwards per step
    costs = memory.sampling_bytes(10, 4, 3, world_size=2, decode_forwards=5)
    assert costs["copy"] == {"held": 20, "received": 10}          # bf16 copy; half arrives by all-gather
    assert costs["sharded"] == {"held": 20, "received": 50}       # root + 2 layers whole; every forward
    assert memory.sampling_bytes(40, 4, 3, 2, 5)["sharded"]["held"] == 2 * (4 + 2 * 3)   # 12 layers: 2 whole
