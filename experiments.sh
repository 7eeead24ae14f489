#!/usr/bin/env bash
# The experiments of docs/results.md on the shipped tiny model and the synthetic task, one command each.
# Runs go to runs/<experiment>/<method>[-mu<mu>]-seed<seed>, figures to figures/<experiment>.
#
#   bash experiments.sh directions    # entropy-up vs entropy-down: Theorem 2's prediction at model scale
#   bash experiments.sh mu            # GRPO, Clip-B (mu 1.0, 2.5) and Clip-V (mu 1.0, 3.0, 8.5), 300 steps
#   bash experiments.sh methods       # every entropy method side by side
#   bash experiments.sh passk         # pass@k up to k = 64 of the finished runs above and the base model
#   bash experiments.sh testbed       # the registered comparison on the countdown task (docs/testbed.md)
#   bash experiments.sh testbed-eval  # its pass@k up to k = 32 (TB_N) on the test and hard splits, and figures
#
# SEEDS (default "0 1 2"), JOBS (parallel runs, default 2, one thread each), MODEL (a model
# folder instead of the shipped tiny-qwen2/) and ONLY (run names to keep, e.g.
# ONLY="grpo clipv-mu1.0"; default all) can be set in the environment. Each run is the
# default `python train.py` with the method's flags and the entropy probe every 10 steps
# (--probe-every 10: Theorem 2's prediction against the measured change).
set -euo pipefail
cd "$(dirname "$0")"
experiment=${1:?usage: bash experiments.sh directions|mu|methods|passk|testbed|testbed-eval}
SEEDS=${SEEDS:-0 1 2}
JOBS=${JOBS:-2}
common=${MODEL:+--model $MODEL}
# the settings drawn together, one figure per group (fifteen lines in one figure would be
# unreadable): the comparison of the paper's Table 1 and GRPO with the methods added since the paper
PAPER="grpo clipb-mu1.0 clipv-mu1.0 clip-higher entropy-bonus forking clip-cov kl-cov"
ADDED="grpo adaptive-entropy entropy-adv w-reinforce nsr passk gspo cispo"
MU_PASSK="grpo clipb-mu1.0 clipb-mu2.5 clipv-mu1.0"   # the 300-step settings evaluated by passk
probe="--probe-every 10"
# the countdown testbed as docs/testbed.md registers it: its model, task, budget and evaluation
TB_MODEL=${MODEL:-tiny-qwen2-countdown}
TB_STEPS=${TB_STEPS:-100}
TB_N=${TB_N:-32}; TB_LIMIT=${TB_LIMIT:-50}; TB_TOKENS=160
TB_MAIN="grpo clipb-mu1.0 clipv-mu1.0"                                  # five seeds (0-2, then 3-4)
TB_MORE="clipb-mu2.5 clipv-mu8.5 clip-higher entropy-bonus"             # three seeds (0-2)
TB_MORE_SEEDS="[0-2]"   # the seeds they are compared on, GRPO's included (docs/testbed.md)

# the finished or started runs runs/EXPERIMENT/NAME-seedS/ of the NAMES given, S matching the
# glob SEEDS (default: every seed), with FILE appended
runs_of() {   # runs_of EXPERIMENT "NAMES" [FILE] [SEEDS]
  for name in $2; do compgen -G "runs/$1/$name-seed${4:-*}/${3:-}" || true; done
}

case "$experiment" in
  directions) configs=("--method entropy-up" "--method entropy-down") ;;
  # 300 steps, long enough for the entropy curves to separate; docs/results.md reads its tables
  # at step 100 (plot.py --until 100) and at step 300
  mu)         configs=("--method grpo" "--method clipb --mu 1.0" "--method clipb --mu 2.5"
                       "--method clipv --mu 1.0" "--method clipv --mu 3.0" "--method clipv --mu 8.5")
              common="$common --steps 300" ;;
  # four optimiser updates per rollout batch, so that the importance ratio leaves 1 and the
  # ratio-based methods (clip-higher's eps_high, KL-Cov's |logp - old_logp|) act at all
  methods)    configs=("--method grpo" "--method clipb --mu 1.0" "--method clipv --mu 1.0"
                       "--method clip-higher" "--method entropy-bonus" "--method forking"
                       "--method clip-cov" "--method kl-cov" "--method adaptive-entropy"
                       "--method entropy-adv" "--method w-reinforce" "--method nsr" "--method passk"
                       "--method gspo" "--method cispo")
              common="$common --mini-batches 4" ;;
  # the registered settings first, then the others (SEEDS is ignored; ONLY still applies)
  testbed)    common="--model $TB_MODEL --dataset countdown --max-new-tokens $TB_TOKENS --mini-batches 4 --steps $TB_STEPS --eval-every 0"
              probe=""
              main=("--method grpo" "--method clipb --mu 1.0" "--method clipv --mu 1.0")
              more=("--method clipb --mu 2.5" "--method clipv --mu 8.5 --clip-max-frac 1e-4"
                    "--method clip-higher" "--method entropy-bonus") ;;
  # n = TB_N samples of the first TB_LIMIT problems of the test and hard splits (TB_SPLITS="hard":
  # the hard one only) for every finished testbed run and the base model (three sampling seeds),
  # the chance curves, then the figures (named with -n$TB_N unless n = 32, the registered n)
  testbed-eval) splits=${TB_SPLITS:-test hard}; name="eval$TB_N${TB_SPLITS:+-${TB_SPLITS// /-}}"
              datasets=$(printf 'countdown:%s,' $splits); datasets=${datasets%,}
              evaluate="OMP_NUM_THREADS=1 python eval.py --datasets $datasets --n $TB_N --limit $TB_LIMIT --temperature 1.0 --max-new-tokens $TB_TOKENS --batch-size 256"
              base=runs/testbed-base; mkdir -p $base
              { for d in runs/testbed/*-seed*/; do
                  [ -f "$d/final/config.json" ] && [ ! -f "$d/$name.json" ] \
                    && echo "$evaluate --model $d/final --seed 0 --out $d/$name.json > $d/$name.log 2>&1"
                done
                for seed in 0 1 2; do
                  [ -f "$base/$name-seed$seed.json" ] \
                    || echo "$evaluate --model $TB_MODEL --seed $seed --out $base/$name-seed$seed.json > /dev/null 2>&1"
                done; } | xargs -P "$JOBS" -I{} bash -c "{}"
              python countdown.py --n "$TB_LIMIT" --max-k "$TB_N" --out $base/chance$TB_N.json > /dev/null
              suffix=$([ "$TB_N" = 32 ] || echo "-n$TB_N")
              ks=$(for k in 1 4 16 32 64 128 256; do [ "$k" -lt "$TB_N" ] && echo -n "$k "; done; echo "$TB_N")
              for split in $splits; do
                for group in "main:$TB_MAIN:*" "more:grpo $TB_MORE:$TB_MORE_SEEDS"; do
                  IFS=: read -r tag names seeds <<< "$group"
                  [ -n "$(runs_of testbed "${names#grpo }" "$name.json" "$seeds")" ] || continue   # GRPO alone
                  files=$(runs_of testbed "$names" "$name.json" "$seeds")
                  python plot.py --passk $files --base $base/$name-seed*.json --ks $ks \
                    --chance $base/chance$TB_N.json --eval-set "countdown:$split" \
                    --band ci95 --out "figures/testbed-$tag-passk-$split$suffix" --no-show
                done
              done
              exit 0 ;;
  # exploration as Yue et al. 2025 measure it: n = PASSK_N (64) samples of PASSK_LIMIT (100)
  # held-out problems for the final model of every finished run of `methods` and of GRPO /
  # Clip-B / Clip-V in `mu`, and for the base model once per seed, with the runs' own response
  # budget (train.py's default --max-new-tokens 48; eval.py's 512 would let a high-entropy policy
  # that does not stop write 512 tokens, ten times the training budget); then pass@k against k
  passk)      N=${PASSK_N:-64}; LIMIT=${PASSK_LIMIT:-100}; model=${MODEL:-tiny-qwen2}
              evaluate="OMP_NUM_THREADS=1 python eval.py --datasets synthetic --n $N --limit $LIMIT --temperature 1.0 --max-new-tokens 48"
              mkdir -p runs/passk-base
              { for d in runs/methods/*-seed*/ $(runs_of mu "$MU_PASSK"); do
                  [ -f "$d/final/config.json" ] && [ ! -f "$d/passk$N.json" ] \
                    && echo "$evaluate --model $d/final --seed 0 --out $d/passk$N.json > $d/passk$N.log 2>&1"
                done
                for seed in $SEEDS; do
                  [ -f "runs/passk-base/seed$seed.json" ] \
                    || echo "$evaluate --model $model --seed $seed --out runs/passk-base/seed$seed.json > /dev/null 2>&1"
                done; } | xargs -P "$JOBS" -I{} bash -c "{}"
              # the sign-guessing bound (data.sign_guess_curve), drawn dotted on every figure
              python -c "import data, json; print(json.dumps({'chance: random signs': data.sign_guess_curve(
                  [2 ** i for i in range(7) if 2 ** i <= $N])}))" > runs/passk-base/sign-guess.json
              for figure in "mu:$MU_PASSK:mu-passk" \
                            "methods:$ADDED:methods-passk" "methods:$PAPER:methods-paper-passk"; do
                IFS=: read -r group names out <<< "$figure"
                files=$(runs_of "$group" "$names" "passk$N.json")
                [ -z "$files" ] || python plot.py --passk $files --base runs/passk-base/seed*.json \
                  --chance runs/passk-base/sign-guess.json --band ci95 --out "figures/$out" --no-show
              done
              exit 0 ;;
  *) echo "unknown experiment '$experiment': use directions, mu, methods, passk, testbed or testbed-eval" >&2; exit 2 ;;
esac

jobs_file=$(mktemp)
# one (seeds, settings) batch after another: the testbed's registered settings, then its others
if [ "$experiment" = testbed ]; then
  batches=("0 1 2|main" "0 1 2|more" "3 4|main")
else
  batches=("$SEEDS|configs")
fi
for batch in "${batches[@]}"; do
  IFS="|" read -r batch_seeds batch_configs <<< "$batch"
  declare -n settings="$batch_configs"
for seed in $batch_seeds; do
  for config in "${settings[@]}"; do
    read -r -a flags <<< "$config"
    name=${flags[1]}
    [ "${flags[2]:-}" = "--mu" ] && name="$name-mu${flags[3]}"
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
    out="runs/$experiment/$name-seed$seed"
    [ -f "$out/final/config.json" ] && continue          # finished earlier
    resume=""; compgen -G "$out/checkpoint-*" > /dev/null && resume="--resume"   # interrupted
    echo "OMP_NUM_THREADS=1 python train.py $config $common $probe --seed $seed --out $out $resume > $out.log 2>&1 && echo done: $out" >> "$jobs_file"
  done
done
done
mkdir -p "runs/$experiment"
start=$(date +%s)
xargs -P "$JOBS" -I{} bash -c "{}" < "$jobs_file"
rm -f "$jobs_file"
echo "$experiment: $(( $(date +%s) - start )) s"
draw() { local out=$1; shift; python plot.py "$@" --out "figures/$out" --no-show --smooth 10 --band ci95; }
if [ "$experiment" = methods ]; then
  draw methods $(runs_of methods "$PAPER")
  draw methods-added $(runs_of methods "$ADDED")
elif [ "$experiment" = testbed ]; then
  # a figure is redrawn only when each of its settings has runs: a partial ONLY= batch leaves it be
  complete() { for name in $1; do [ -n "$(runs_of testbed "$name")" ] || return 1; done; }
  ! complete "$TB_MAIN" || draw testbed $(runs_of testbed "$TB_MAIN")
  ! complete "grpo $TB_MORE" || draw testbed-more $(runs_of testbed "grpo $TB_MORE" "" "$TB_MORE_SEEDS")
else
  draw "$experiment" runs/"$experiment"/*/
fi

