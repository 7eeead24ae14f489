"""The assignment's manifest: problem -> functions -> graded tests -> points, read by
make_student.py (which functions lose their bodies, which files stay out) and by grade.py (which
tests score which problem, and the hint shown when one fails). HANDOUT.md gives the same ids and
points (tests/test_assignment.py checks that).

A function is "module:name" or "module:Class.method"; its body in the student version is
`raise NotImplementedError("<problem id>: <todo>")`, its signature and docstring kept. A test is
"file.py::test_name" under assignment/tests/, worth `points` (a parametrised test earns them in
proportion to the cases it passes). A problem's `requires` are the problems whose tests must all
pass in the same grading for its own points to count. `written` points are graded by hand (HANDOUT.md says what a
full answer contains; SOLUTIONS.md has the answers); bonus points come on top of the 100.
"""

from __future__ import annotations

PROBLEMS = [
    {
        "id": "P1", "title": "Warm-up: token entropy and masked loss aggregation", "written": 0,
        "functions": {
            "entropy:_entropy_from_log_probs": "H = -sum_i pi_i log pi_i over the last axis, from log pi",
            "entropy:entropy": "the Shannon entropy of softmax(logits), in nats, in float32 or better",
            "grpo:aggregate": "reduce a per-token loss over the kept tokens (token-mean and the two sequence modes)",
        },
        "tests": {
            "test_p1_warmup.py::test_entropy_contract": (1, "Check the output shape (the vocabulary axis is "
                                                            "reduced) and dtype (never below float32)."),
            "test_p1_warmup.py::test_entropy_three_tokens": (2, "Work the 3-token case on paper; which "
                                                                "logarithm does the paper use?"),
            "test_p1_warmup.py::test_entropy_stable_at_large_logits": (1, "exp of a large logit overflows, "
                                                                          "and 0 * log 0 is NaN; stay in log space."),
            "test_p1_warmup.py::test_aggregate_token_mean_by_hand": (2, "Which tokens belong in the denominator "
                                                                        "of a token mean?"),
            "test_p1_warmup.py::test_aggregate_modes_match_verl": (
                1, "Re-read the three definitions in the docstring, especially who counts as a sequence; select "
                   "the kept tokens (torch.where) rather than multiply by the mask: 0 x NaN is NaN."),
            "test_p1_warmup.py::test_aggregate_micro_batches_add_up": (1, "When counts are passed in, use them "
                                                                          "instead of this micro-batch's own counts."),
        },
    },
    {
        "id": "P2", "title": "Group advantages and the clipped surrogate with dual-clip", "written": 2,
        "functions": {
            "grpo:group_advantages": "A = (r - group mean) / (group std + 1e-6) per response (r - mean without std)",
            "grpo:clipped_surrogate": "the per-token PPO-clip loss with the dual-clip bound for A < 0",
        },
        "tests": {
            "test_p2_grpo.py::test_advantages_by_hand": (3, "Which std does the docstring ask for (sample or "
                                                            "population)? What happens to a constant group?"),
            "test_p2_grpo.py::test_advantages_contract": (1, "Shape (N,), float32, and a ValueError naming the "
                                                             "problem when N does not split into groups."),
            "test_p2_grpo.py::test_surrogate_by_hand": (2, "Write -min(rho A, clip(rho) A) for A > 0 and A < 0 "
                                                           "separately and compare."),
            "test_p2_grpo.py::test_surrogate_gradient_is_zero_where_the_clip_holds": (
                2, "The gradient must vanish only on the side of the trust region that the sign of A selects, "
                   "and stay finite when logp - old_logp is huge (clamp the log-ratio before exp)."),
            "test_p2_grpo.py::test_dual_clip_bounds_negative_advantages": (
                2, "The dual-clip bound applies to A < 0 only, and dual_clip = inf turns it off."),
        },
    },
    {
        "id": "P3", "title": "The entropy discriminator S* and Theorem 1", "written": 6,
        "functions": {
            "entropy:discriminator": "S_i = pi_i (H + log pi_i) for every token of the vocabulary",
            "entropy:s_star": "S_* = S_k of the given token ids",
            "entropy:theorem1_entropy_change": "Theorem 1: the first-order entropy change of dz = eps e_k",
        },
        "tests": {
            "test_p3_discriminator.py::test_discriminator_contract": (1, "S has the logits' shape; S_* has the "
                                                                         "ids' shape; both at least float32."),
            "test_p3_discriminator.py::test_discriminator_three_tokens": (2, "Compute S_i for the 3-token policy "
                                                                             "by hand; which factor multiplies "
                                                                             "(H + log pi_i)?"),
            "test_p3_discriminator.py::test_s_star_gathers_the_sampled_tokens": (
                1, "S_* is one entry of S per position: the one of the given id, with that position's own H."),
            "test_p3_discriminator.py::test_theorem1_by_finite_differences": (
                2, "Perturb one logit by eps in float64 and compare the entropy change with your prediction."),
            "test_p3_discriminator.py::test_theorem1_is_the_derivative": (1, "Theorem 1 is a directional "
                                                                             "derivative; check its sign."),
            "test_p3_discriminator.py::test_discriminator_stable_at_large_logits": (
                1, "Compute from log-probabilities, never from probabilities that underflow to 0."),
        },
    },
    {
        "id": "P4", "title": "The vocabulary baseline E[S], Theorem 2 and Corollary 1", "written": 12,
        "functions": {
            "entropy:expected_discriminator": "E_{i~pi}[S_i], the on-policy mean of the discriminator",
            "entropy:theorem2_entropy_change": "Theorem 2: the first-order entropy change of dz = alpha (e_k - pi)",
            "entropy:predicted_entropy_change": "Theorem 2 per response token: -A_t (S*_t - E[S]_t)",
        },
        "tests": {
            "test_p4_baseline.py::test_expected_discriminator_three_tokens": (
                2, "E[S] is an expectation over i ~ pi of S_i; how many factors of pi_i does each term carry?"),
            "test_p4_baseline.py::test_expected_discriminator_is_the_on_policy_mean": (
                2, "Corollary 1: the on-policy mean of S_k must equal your E[S] for any policy."),
            "test_p4_baseline.py::test_theorem2_by_finite_differences": (
                2, "Apply dz = alpha (e_k - pi) in float64, for alpha > 0 and < 0, and compare."),
            "test_p4_baseline.py::test_predicted_entropy_change_per_token": (
                1, "Per-response advantages (N,) broadcast over T; the result is float64 (N, T)."),
            "test_p4_baseline.py::test_baseline_stable_at_large_logits": (
                1, "pi_i^2 log pi_i -> 0 as pi_i -> 0; compute it so that it does."),
        },
    },
    {
        "id": "P5", "title": "The Clip-B and Clip-V masks, as released", "written": 0,
        "functions": {
            "clipping:_discriminator_clip": "the lower (and optional upper) rule on d and sigma, with the cap",
            "clipping:clip_b_mask": "Clip-B: d = S* - batch mean of S*, sigma = population std of S*",
            "clipping:clip_v_mask": "Clip-V: d = S* - E[S] (not re-centred), sigma = population std of d",
        },
        "tests": {
            "test_p5_masks.py::test_mask_contract": (1, "Return (keep (N, T) bool, metrics dict); padding is "
                                                        "never kept; sigma ~ 0 keeps every valid token."),
            "test_p5_masks.py::test_clip_b_by_hand": (3, "Statistics over valid tokens only; the lower rule "
                                                         "removes A < 0 tokens far below the centre."),
            "test_p5_masks.py::test_clip_v_deviation_is_not_recentred": (
                2, "Clip-V reads d = S* - E[S] as it is; only sigma is a batch statistic."),
            "test_p5_masks.py::test_zero_advantage_tokens": (2, "Clip-B and Clip-V treat A = 0 differently; "
                                                                "re-read the module docstring."),
            "test_p5_masks.py::test_upper_rule_and_cap": (2, "mu_pos = inf means off; the cap counts only the "
                                                             "A < 0 removals and keeps the most negative d."),
            "test_p5_masks.py::test_masks_equal_the_released_rules": (
                4, "Compare your masks with the release's rule on a small random batch; start from the "
                   "seed the message names."),
        },
    },
    {
        "id": "P6", "title": "Unbiased pass@k", "written": 2,
        "functions": {
            "grpo:pass_at_k": "the unbiased 1 - C(n - c, k) / C(n, k), without forming binomials",
        },
        "tests": {
            "test_p6_pass_at_k.py::test_pass_at_k_by_hand": (1, "pass@k is a statement about k samples drawn "
                                                                "without replacement from the n you have."),
            "test_p6_pass_at_k.py::test_pass_at_k_matches_enumeration": (
                2, "Enumerate all k-subsets of a small n by hand and count those with a correct sample."),
            "test_p6_pass_at_k.py::test_pass_at_k_large_n_and_errors": (
                1, "Binomials of n in the hundreds overflow floats; validate c and k with a clear ValueError."),
        },
    },
    {
        "id": "P7", "title": "Advanced: chunked token statistics in bounded memory", "written": 2,
        "functions": {
            "entropy:_ChunkedTokenStats.forward": "logp, H, S*, E[S] chunk by chunk; save only what backward needs",
            "entropy:_ChunkedTokenStats.backward": "recompute each chunk's logits; dL/dz in closed form; "
                                                   "gradients of hidden and weight",
        },
        "tests": {
            "test_p7_chunked.py::test_values_match_the_direct_computation": (
                3, "Compare one chunk with the full-logit computation first; then check the chunk boundaries."),
            "test_p7_chunked.py::test_gradients_match_autograd": (3, "Differentiate logp and H with respect "
                                                                     "to the logits on paper; mind 1/temperature."),
            "test_p7_chunked.py::test_gradcheck_float64": (1, "Run torch.autograd.gradcheck on a tiny float64 "
                                                              "case; a None output gradient means 'unused'."),
            "test_p7_chunked.py::test_memory_is_bounded_by_the_chunk": (
                2, "No tensor may have all T x V logits, in forward or in backward."),
            "test_p7_chunked.py::test_contract_dtypes_and_detached_outputs": (
                1, "float32 outputs for bf16 inputs; S* and E[S] carry no gradient."),
        },
    },
    {
        "id": "P8", "title": "Experiment: GRPO against Clip-B and Clip-V on your implementation", "written": 12,
        "functions": {},
        # P8's check reads the metrics the student's own code writes, so it counts only when the
        # functions the run calls pass their own tests in the same grading (grade.py runs them).
        "requires": ["P1", "P2", "P5", "P6", "P7"],
        "tests": {
            "test_p8_pipeline.py::test_training_runs_on_your_code": (
                2, "Make P1, P2, P5, P6 and P7 pass first: train.py calls them every step."),
        },
    },
]

# Bonus (graded by hand, on top of the 100 points): see HANDOUT.md.
BONUS = [{"id": "B1", "title": "Bonus, with a GPU: Qwen2.5 on GSM8K", "written": 10}]

# Never in the student version (glob patterns relative to the repository root): scripts that
# compute the removed formulas (the benchmarks' direct path), the experiment driver, the
# instructor's files and the generator's own tests (their planted bugs quote reference lines).
EXCLUDE = [
    ".git", ".git/*", "runs/*", ".venv*", "*/__pycache__/*", "__pycache__/*", "*.pyc", ".pytest_cache/*",
    "out/*", "bench*.py", "experiments.sh", "assignment/SOLUTIONS.md", "assignment/INSTRUCTORS.md",
    "assignment/make_student.py", "assignment/variants.py", "assignment/tests/oracles.py", "tests/test_assignment*.py",
    "tests/test_readme.py",   # keeps the reference's guide true; that guide names the scripts left out
]

# Repository tests that need a file of EXCLUDE: deselected in the student version's pytest.ini.
DESELECT = [
    "tests/test_layout.py::test_every_file_has_a_layer",
    "tests/test_memory.py::test_the_gpu_acceptance_step_runs_on_a_cpu_with_shrunk_models",
    "tests/test_memory.py::test_engine_rows_give_both_engines_side_by_side",
    "tests/test_memory.py::test_long_tailed_eos_sets_the_mean_eos_probability_on_its_sample",
    "tests/test_distributed.py::test_generating_through_the_sharded_model_gives_the_copys_tokens",
]


def problem(pid: str) -> dict:
    """The manifest entry of one problem id."""
    for p in PROBLEMS:
        if p["id"] == pid:
            return p
    raise KeyError(f"no problem {pid!r} in the manifest; ids: {', '.join(p['id'] for p in PROBLEMS)}")


def total_points(p: dict) -> int:
    return sum(points for points, _ in p["tests"].values()) + p["written"]
