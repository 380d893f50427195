#!/usr/bin/env bash
# The CPU performance figures of the README's "Performance" section, on this
# machine: GEMM rates, convolution products against the GEMM rate, thread
# scaling of a ResNet-20 training step, where the time of a step goes, and
# (when a Python with torch is given) the side-by-side comparison with
# PyTorch. Ratios within one run are the numbers to read: absolute times
# move with the machine's load.
#
# Usage: scripts/cpu-performance.sh [DATA_DIR] [PYTHON_WITH_TORCH]
#   DATA_DIR defaults to ../shared/datasets; without a Python that imports
#   torch the PyTorch comparison is skipped (and the script says so).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/datasets}
py=${2:-python3}
bin=target/release/approxtrain
cargo build --release --quiet
grep -m1 'model name' /proc/cpuinfo
grep -o -m1 'avx512f\|avx2' /proc/cpuinfo | head -1 | sed 's/^/widest SIMD: /'

echo "== GEMM 1024^3 (2 threads, then 1)"
for t in 2 1; do
  $bin --threads $t bench gemm --m 1024 --n 1024 --k 1024 --multiplier fp32,mbm:7 --repeats 5
done

echo "== ResNet-20 convolution products, batch 128, 2 threads (GMAC/s against the GEMM rate above)"
$bin --threads 2 bench conv --shape resnet20-layer1,resnet20-layer2,resnet20-layer3,resnet20-down2,resnet20-down3 \
  --batch 128 --multiplier fp32,mbm:7 --repeats 3

echo "== ResNet-20 training step, 1 and 2 threads, with the per-operation profile"
for t in 1 2; do
  $bin --threads $t bench train --net resnet20 --data-dir "$data" --multiplier fp32,mbm:7 \
    --batch-size 128 --images 512 --profile
done

if "$py" -c 'import torch' 2>/dev/null; then
  echo "== Side by side with PyTorch (2 threads, medians of 3)"
  "$py" scripts/compare-pytorch.py --data-dir "$data" --threads 2 --repeats 3
else
  echo "== PyTorch comparison skipped: $py cannot import torch (pass a Python that has it)"
fi
