#!/usr/bin/env bash
# Build a folder of prebuilt x86-64 binaries that scripts/gpu-check.sh runs
# on a machine with an NVIDIA GPU and no Rust toolchain.
#
#   scripts/build-gpu-bundle.sh [DIR]        # default: gpu-bundle
#
# DIR gets: approxtrain (the CLI), cuda-tests (the CUDA parity tests),
# gpu-check.sh, and data/mnist (the MNIST files, when ../shared/datasets or
# $APPROXTRAIN_DATA has them). Binaries are stripped to keep the folder small.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-bundle}
mkdir -p "$out"
cargo build --release --bin approxtrain
# The test binary's path is printed by cargo as a JSON "executable".
exe=$(cargo test --release -p amsim --test cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])' | tail -1)
[ -n "$exe" ] || { echo "error: could not find the cuda test binary" >&2; exit 1; }
cp target/release/approxtrain "$out/approxtrain"
cp "$exe" "$out/cuda-tests"
strip "$out/approxtrain" "$out/cuda-tests" 2>/dev/null || true
cp scripts/gpu-check.sh "$out/"
data=${APPROXTRAIN_DATA:-../shared/datasets}
if [ -d "$data/mnist" ]; then
  mkdir -p "$out/data/mnist"
  cp "$data"/mnist/*.gz "$out/data/mnist/"
fi
du -sh "$out"
echo "bundle ready: copy $out to the GPU machine and run: bash $out/gpu-check.sh $out"
