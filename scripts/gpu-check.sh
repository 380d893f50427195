#!/usr/bin/env bash
# Every GPU check and benchmark of the CUDA engine, from a folder of
# prebuilt binaries (scripts/build-gpu-bundle.sh); needs an NVIDIA GPU with
# its driver, NVRTC and cuBLAS (the CUDA toolkit, or the PyPI wheels
# nvidia-cuda-nvrtc-cu12 and nvidia-cublas-cu12), and python3; no Rust.
#
#   bash gpu-check.sh [BUNDLE_DIR] [OUT_DIR]
#
# Prints one short table at the end; full logs go to OUT_DIR (default
# gpu-check-out). Steps:
#   1. CUDA parity tests (bit-exact GEMM, batched GEMM, convolutions, all
#      widths 1..=11; NVRTC compile; out-of-memory), and the Transformer
#      trained on the GPU against the CPU (bit-identical for mbm:7 and a
#      mixed plan, fp32 within rounding), a GPU required;
#   2. GEMM 4096^3: cuBLAS SGEMM (TF32 off) vs the AMSim kernels;
#   3. ResNet-20 convolution products at batch 128;
#   4. training: LeNet-5 on MNIST (one epoch) and ResNet-20 on CIFAR-10-format
#      data, --device cuda vs the CPU of the same machine;
#   5. training: 50 steps of the default Transformer (4 layers, width 128,
#      4 heads, context 128, batch 32) on the bundled Shakespeare text, fp32
#      and mbm:7, --device cuda vs the CPU: seconds per step and the share
#      of the run spent in host-device transfers.
#   6. PyTorch eager (TF32 off) against `bench train --device cuda` on the
#      same nets, batch and optimizer, alternating (compare-pytorch.py).
set -uo pipefail
B=$(cd "${1:-gpu-bundle}" && pwd)
OUT=${2:-gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T=${TMPDIR:-/tmp}/approxtrain-gpu-check
rm -rf "$T"; mkdir -p "$T"

# Libraries: the CUDA toolkit's lib folders and any pip wheels.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64; do
  [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
for m in cuda_nvrtc cublas; do
  d=$(python3 -c "import nvidia.$m as m, os; print(os.path.join(m.__path__[0], 'lib'))" 2>/dev/null) && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${gpu:-none found by nvidia-smi}; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
A="$B/approxtrain"
declare -a SUMMARY

# 1. Parity tests.
echo "== 1. CUDA parity tests"
if APPROXTRAIN_REQUIRE_GPU=1 APPROXTRAIN_REQUIRE_NVRTC=1 "$B/cuda-tests" --test-threads=1 >"$OUT/tests.txt" 2>&1; then
  SUMMARY+=("parity tests|$(grep -E '^test result' "$OUT/tests.txt" | tail -1)")
else
  SUMMARY+=("parity tests|FAILED (see tests.txt): $(grep -E 'panicked|FAILED|error' "$OUT/tests.txt" | head -2 | tr '\n' ' ')")
fi
grep -E "seed =|^test |running on" "$OUT/tests.txt" | head -20
if [ -x "$B/transformer-cuda-tests" ]; then
  if APPROXTRAIN_REQUIRE_GPU=1 "$B/transformer-cuda-tests" --test-threads=1 >"$OUT/transformer-tests.txt" 2>&1; then
    SUMMARY+=("transformer parity tests|$(grep -E '^test result' "$OUT/transformer-tests.txt" | tail -1)")
  else
    SUMMARY+=("transformer parity tests|FAILED (see transformer-tests.txt): $(grep -E 'panicked|FAILED|error' "$OUT/transformer-tests.txt" | head -2 | tr '\n' ' ')")
  fi
  grep -E "seed =|^test |running on" "$OUT/transformer-tests.txt" | head -12
else
  SUMMARY+=("transformer parity tests|MISSING: transformer-cuda-tests is not in the bundle")
fi

# 2. GEMM 4096^3.
echo "== 2. GEMM 4096x4096x4096"
"$A" bench gemm --device cuda --m 4096 --n 4096 --k 4096 --multiplier fp32,bf16,mbm:7,mitchell:7,mbm:10 \
  --repeats 5 --warmup 2 --json >"$OUT/gemm.json" 2>"$OUT/gemm.err"
cat "$OUT/gemm.json" "$OUT/gemm.err"
while read -r line; do
  SUMMARY+=("$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("gemm 4096^3 %s|%.2f ms, %.0f GMAC/s, %.2fx cuBLAS SGEMM" % (r["multiplier"], 1e3*r["seconds"], r["gmacs"], r["ratio_vs_fp32"]))' "$line")")
done <"$OUT/gemm.json"

# 3. Convolutions.
echo "== 3. ResNet-20 convolutions, batch 128"
"$A" bench conv --device cuda --shape resnet20-layer1,resnet20-layer2,resnet20-layer3 --batch 128 \
  --multiplier mbm:7 --repeats 5 >"$OUT/conv.txt" 2>&1
cat "$OUT/conv.txt"

# 4. Training epochs.
echo "== 4. training"
mkdir -p "$T/data/cifar-10"
# CIFAR-10-format batches of random pixels and labels (the dataset does not
# travel with the bundle; epoch time does not depend on pixel values).
python3 - "$T/data/cifar-10" <<'PY'
import os, sys, random
d = sys.argv[1]
rng = random.Random(1)
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(d, name), "wb") as f:
        rec = bytearray(os.urandom(3073 * 10000))
        for i in range(10000):
            rec[i * 3073] = rng.randrange(10)
        f.write(rec)
PY
if [ -d "$B/data/mnist" ]; then ln -sfn "$B/data/mnist" "$T/data/mnist"; fi
epoch_time() { # run dir -> seconds of epoch 1
  python3 -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]+"/metrics.csv"))); print(r[0]["seconds"]) if r else print("nan")' "$1" 2>/dev/null || echo nan
}
train_one() { # label device net dataset mult limit threads extra...
  local label=$1 dev=$2 net=$3 ds=$4 mult=$5 limit=$6 thr=$7; shift 7
  local dir="$T/run-$label"
  local lim=(); [ "$limit" != all ] && lim=(--train-limit "$limit")
  if timeout 150 "$A" --threads "$thr" train --device "$dev" --net "$net" --dataset "$ds" --multiplier "$mult" \
      --epochs 1 --batch-size 128 --data-dir "$T/data" --out "$dir" --force "${lim[@]}" --test-limit 1000 "$@" \
      >"$OUT/train-$label.txt" 2>&1; then
    local s; s=$(epoch_time "$dir")
    local n=$limit; [ "$n" = all ] && n=$([ "$ds" = mnist ] && echo 60000 || echo 50000)
    SUMMARY+=("$label|$(python3 -c 'import sys; s=float(sys.argv[1]); n=int(sys.argv[2]); full=int(sys.argv[3]); print("%.1f s for %d images = %.0f images/s; epoch of %d: %.1f s" % (s, n, n/s, full, s*full/n))' "$s" "$n" "$([ "$ds" = mnist ] && echo 60000 || echo 50000)") $(grep -m1 'GPU transfers' "$OUT/train-$label.txt" | sed 's/GPU transfers: //')")
  else
    SUMMARY+=("$label|FAILED: $(tail -2 "$OUT/train-$label.txt" | tr '\n' ' ')")
  fi
}
NP=$(nproc)
if [ -d "$B/data/mnist" ]; then
  for m in fp32 mbm:7; do
    train_one "lenet5-mnist-$m-cuda" cuda lenet5 mnist "$m" all 4
    train_one "lenet5-mnist-$m-cpu$NP" cpu lenet5 mnist "$m" all "$NP"
  done
fi
# Bit-exact training: the mbm:7 LeNet-5 runs on the GPU and on the CPU must
# leave byte-identical checkpoints (same weights, optimizer state, metrics).
if [ -f "$T/run-lenet5-mnist-mbm:7-cuda/checkpoint.bin" ] && [ -f "$T/run-lenet5-mnist-mbm:7-cpu$NP/checkpoint.bin" ]; then
  if cmp -s "$T/run-lenet5-mnist-mbm:7-cuda/checkpoint.bin" "$T/run-lenet5-mnist-mbm:7-cpu$NP/checkpoint.bin"; then
    SUMMARY+=("lenet5 mbm:7 cuda vs cpu|checkpoints after one epoch byte-identical")
  else
    SUMMARY+=("lenet5 mbm:7 cuda vs cpu|checkpoints DIFFER")
  fi
fi
for m in fp32 mbm:7; do
  train_one "resnet20-cifar-$m-cuda" cuda resnet20 cifar10 "$m" 10000 "$NP"
  train_one "resnet20-cifar-$m-cpu$NP" cpu resnet20 cifar10 "$m" 2560 "$NP"
done

# 5. Transformer steps. s/step is taken over steps 11-50 (the first ten
# include table uploads and allocator warm-up); the evaluation after every
# ten steps reads 8 windows only. The transfer share is of the whole run.
echo "== 5. Transformer training, 50 steps"
TEXT="$B/data/shakespeare/first-folio.txt"
lm_one() { # label device mult
  local label=$1 dev=$2 mult=$3
  local dir="$T/run-$label"
  if timeout 600 "$A" --threads "$NP" train --device "$dev" --net transformer --dataset "text:$TEXT" \
      --multiplier "$mult" --layers 4 --width 128 --heads 4 --context 128 --batch-size 32 \
      --steps 50 --eval-every 10 --eval-windows 8 --out "$dir" --force >"$OUT/train-$label.txt" 2>&1; then
    SUMMARY+=("$label|$(python3 -c 'import csv,sys
r=list(csv.DictReader(open(sys.argv[1]+"/metrics.csv")))
late=r[1:]
steps=int(late[-1]["step"])-int(r[0]["step"])
s=sum(float(x["seconds"]) for x in late)
print("%.3f s/step (steps %d-%d), %.1f s for all %s steps" % (s/steps, int(r[0]["step"])+1, int(late[-1]["step"]), sum(float(x["seconds"]) for x in r), late[-1]["step"]))' "$dir" 2>/dev/null || echo "no metrics") $(grep -m1 'GPU transfers' "$OUT/train-$label.txt" | sed 's/GPU transfers: //')")
  else
    SUMMARY+=("$label|FAILED: $(tail -2 "$OUT/train-$label.txt" | tr '\n' ' ')")
  fi
}
if [ -f "$TEXT" ]; then
  for m in fp32 mbm:7; do
    lm_one "transformer-$m-cuda" cuda "$m"
    lm_one "transformer-$m-cpu$NP" cpu "$m"
  done
else
  SUMMARY+=("transformer timing|SKIPPED: $TEXT is not in the bundle")
fi

# 6. PyTorch eager on the same GPU: the same nets, batch and optimizer,
# TF32 off, alternating with approxtrain `bench train --device cuda`
# (scripts/compare-pytorch.py; medians of PYTORCH_REPEATS runs, default 3).
echo "== 6. PyTorch vs approxtrain on the GPU"
if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  SUMMARY+=("vs PyTorch (cuda)|SKIPPED: python3 has no PyTorch that sees the GPU")
elif [ ! -f "$B/compare-pytorch.py" ]; then
  SUMMARY+=("vs PyTorch (cuda)|MISSING: compare-pytorch.py is not in the bundle")
else
  nets=resnet20
  [ -d "$T/data/mnist" ] && nets="lenet5,$nets"
  [ -f "$TEXT" ] && nets="$nets,transformer"
  if timeout 900 python3 "$B/compare-pytorch.py" --device cuda --approxtrain "$A" --data-dir "$T/data" \
      --text "$TEXT" --threads "$NP" --repeats "${PYTORCH_REPEATS:-3}" --nets "$nets" --multiplier fp32,mbm:7 \
      --resnet-images 5120 --lm-steps 20 >"$OUT/pytorch.txt" 2>"$OUT/pytorch.err"; then
    cat "$OUT/pytorch.txt"
    # Table rows: net, work, PyTorch seconds, then seconds and ratio per multiplier.
    while read -r net rest; do
      SUMMARY+=("vs PyTorch (cuda) $net|$rest")
    done < <(grep -E '^(lenet5|resnet20|transformer) ' "$OUT/pytorch.txt")
  else
    SUMMARY+=("vs PyTorch (cuda)|FAILED (see pytorch.err): $(tail -2 "$OUT/pytorch.err" | tr '\n' ' ')")
  fi
fi

echo
echo "== summary ($gpu)"
printf "%s\n" "${SUMMARY[@]}" | awk -F"|" "{ printf \"%-34s %s\\n\", \$1, \$2 }"
printf '%s\n' "${SUMMARY[@]}" >"$OUT/summary.txt"
