#!/usr/bin/env bash
# Build a folder of prebuilt x86-64 binaries that scripts/gpu-check.sh runs
# on a machine with an NVIDIA GPU and no Rust toolchain.
#
#   scripts/build-gpu-bundle.sh [DIR]        # default: gpu-bundle
#
# DIR gets: approxtrain (the CLI), cuda-tests (the CUDA engine's parity
# tests), transformer-cuda-tests (the Transformer trained on the GPU against
# the CPU), gpu-check.sh, compare-pytorch.py, data/mnist (the MNIST files) and
# data/shakespeare/first-folio.txt (the Transformer timing's text), when
# ../shared/datasets or $APPROXTRAIN_DATA has them. Binaries are stripped to
# keep the folder small.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-bundle}
mkdir -p "$out"
cargo build --release --bin approxtrain
# A test binary's path is printed by cargo as a JSON "executable".
test_exe() { # package test-target
  cargo test --release -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2" | tail -1
}
exe=$(test_exe amsim cuda)
[ -n "$exe" ] || { echo "error: could not find the cuda test binary" >&2; exit 1; }
lm_exe=$(test_exe nets transformer_cuda)
[ -n "$lm_exe" ] || { echo "error: could not find the transformer_cuda test binary" >&2; exit 1; }
cp target/release/approxtrain "$out/approxtrain"
cp "$exe" "$out/cuda-tests"
cp "$lm_exe" "$out/transformer-cuda-tests"
strip "$out/approxtrain" "$out/cuda-tests" "$out/transformer-cuda-tests" 2>/dev/null || true
cp scripts/gpu-check.sh scripts/compare-pytorch.py "$out/"
data=${APPROXTRAIN_DATA:-../shared/datasets}
if [ -d "$data/mnist" ]; then
  mkdir -p "$out/data/mnist"
  cp "$data"/mnist/*.gz "$out/data/mnist/"
fi
if [ -f "$data/shakespeare/first-folio.txt" ]; then
  mkdir -p "$out/data/shakespeare"
  cp "$data/shakespeare/first-folio.txt" "$out/data/shakespeare/"
fi
du -sh "$out"
echo "bundle ready: copy $out to the GPU machine and run: bash $out/gpu-check.sh $out"
