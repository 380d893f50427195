#!/usr/bin/env bash
# The character-level Transformer comparison on the Shakespeare First
# Folio: the default model (4 layers, width 128, 4 heads, context 128, tied
# head, AdamW lr 1e-3 with 100 warm-up steps and cosine decay, batch 32,
# gradient norm clipped to 1) trained for the same number of steps with
#   fp32, bf16, mbm:7 in every product (attention scores included), and
#   mbm:7 with the attention products Q·Kᵀ and A·V exact (a plan file),
# then the loss plot, the report and a few sampled lines of each model.
#
#   scripts/transformer-shakespeare.sh [OUT]     # default: results/transformer-shakespeare
#
# STEPS (default 1200, as in results/transformer-shakespeare) sets the
# steps of every run: pick it so that the slowest run (mbm:7, about 23
# minutes for 1200 steps on 2 cores) fits the time at hand (a 5-step probe
# of each multiplier is printed first: seconds per step).
# EVAL_EVERY (default 50) sets the steps between validation rows.
# Runs are resumable: rerunning the script continues unfinished runs and
# skips finished ones. For a quick check of the script itself:
#   BIN=target/debug/approxtrain STEPS=20 EVAL_EVERY=10 \
#   EXTRA_FLAGS="--layers 1 --width 32 --heads 2 --context 32 --eval-windows 8" \
#   scripts/transformer-shakespeare.sh runs/lm-check
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/transformer-shakespeare}
steps=${STEPS:-1200}
every=${EVAL_EVERY:-50}
text=${APPROXTRAIN_SHARED_DATA:-../shared/datasets}/shakespeare/first-folio.txt
[ -f "$text" ] || { echo "error: $text not found (set APPROXTRAIN_SHARED_DATA)" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin approxtrain
fi
bin=${BIN:-target/release/approxtrain}
mkdir -p "$out"

# shellcheck disable=SC2206 # EXTRA_FLAGS is split into words on purpose
common=(--net transformer --dataset "text:$text" --seed 1 ${EXTRA_FLAGS:-})

# Seconds per step of each multiplier, to choose STEPS.
probe=$(mktemp -d)
for m in fp32 bf16 mbm:7; do
  start=$(date +%s%N)
  "$bin" train "${common[@]}" --multiplier "$m" --steps 5 --eval-every 5 \
    --out "$probe/$m" >/dev/null 2>"$probe/log" || { cat "$probe/log" >&2; exit 1; }
  echo "probe: $m $(( ($(date +%s%N) - start) / 5000000 )) ms/step (with one evaluation)"
done
rm -rf "$probe"

# The plan file: mbm:7 everywhere except the attention score products.
cat > "$out/attn-exact.toml" <<'EOF'
# mbm:7 for every product but Q·Kᵀ and A·V (and their gradients) in every block.
multiplier = "mbm:7"
attn_qk = "fp32"
attn_av = "fp32"
EOF

run() {
  local name=$1; shift
  local dir="$out/$name"
  if [ -f "$dir/run.toml" ] && ! grep -q 'status = "finished"' "$dir/run.toml"; then
    "$bin" train --resume "$dir"
  else
    "$bin" train "${common[@]}" --steps "$steps" --eval-every "$every" "$@" --out "$dir"
  fi
}
run fp32 --multiplier fp32
run bf16 --multiplier bf16
run mbm7 --multiplier mbm:7
run mbm7-attn-exact --plan "$out/attn-exact.toml"

"$bin" plot "$out"

# A few sampled lines from each model, the same prompt and seed (only
# where the checkpoints are there: the repository's copy of the results
# keeps metrics, not checkpoints).
if ls "$out"/{fp32,bf16,mbm7,mbm7-attn-exact}/checkpoint.bin >/dev/null 2>&1; then
  {
    for name in fp32 bf16 mbm7 mbm7-attn-exact; do
      echo "== $name"
      "$bin" sample --checkpoint "$out/$name" --prompt "ROMEO. " --tokens 300 --temperature 0.8 --seed 1
      echo
    done
  } > "$out/samples.txt.new"
  mv "$out/samples.txt.new" "$out/samples.txt"
else
  echo "no checkpoints in $out: samples.txt left as it is (run into a new folder to sample)" >&2
fi

# Final validation loss of each run and the gaps to fp32.
python3 - "$out" <<'EOF'
import csv, math, sys, os
out = sys.argv[1]
final = {}
for name in ["fp32", "bf16", "mbm7", "mbm7-attn-exact"]:
    rows = list(csv.DictReader(open(os.path.join(out, name, "metrics.csv"))))
    final[name] = float(rows[-1]["test_loss"])
    print(f"{name:16s} step {rows[-1]['step']:>6s}  validation loss {final[name]:.4f} nats/char  "
          f"perplexity {math.exp(final[name]):.3f}  gap to fp32 {final[name] - final['fp32']:+.4f}")
EOF
