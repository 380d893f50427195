#!/usr/bin/env bash
# Checks that a training run gives the same bits on CPUs with different
# vector units: the same short LeNet-5 run (MNIST subset shipped in
# data-subset/) natively and under user-mode QEMU emulating CPUs without
# AVX-512 (Haswell: AVX2 + FMA) and, for AMSim multipliers, without AVX
# (Westmere: SSE4.2; the portable kernels, and the C library's exp and log
# without FMA), whose kernels the engine then picks at run time. The
# checkpoints (every weight) must be byte-identical.
#
#   scripts/check-isa-reproducibility.sh [BINARY] [MULTIPLIER...]
#
# BINARY defaults to target/release/approxtrain (built if missing), the
# multipliers to mbm:7 (AMSim: every kernel is bit-exact with the scalar
# reference) and fp32 (the direct convolutions' AVX-512 kernels take the
# AVX2 kernels' products in the same order, and the SGEMM crate gave the
# same bits on LeNet-5's shapes; native paths are compared within a
# tolerance by the tests, so a native difference here is worth a look, not
# a broken promise).
# Needs qemu-user (Debian: apt-get install qemu-user); the emulated run takes
# a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/approxtrain}
shift || true
mults=("$@")
[ ${#mults[@]} -gt 0 ] || mults=(mbm:7 fp32)
if [ ! -x "$bin" ]; then
  cargo build --release
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "error: qemu-x86_64 not found; install qemu-user (apt-get install qemu-user)" >&2
  exit 2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for m in "${mults[@]}"; do
  run() {
    local name=$1
    shift
    "$@" --threads 2 train --net lenet5 --dataset mnist --multiplier "$m" \
      --epochs 1 --train-limit 1024 --test-limit 256 --out "$out/$name-$m" >"$out/$name-$m.log" 2>&1
  }
  run native "$bin"
  a=$(md5sum <"$out/native-$m/checkpoint.bin" | cut -d' ' -f1)
  cpus=(Haswell Westmere)
  case $m in
  fp32 | bf16)
    # Without AVX2 and FMA the native convolutions take im2col and the
    # SGEMM instead of the direct kernels: other sums, other bits.
    cpus=(Haswell)
    echo "$m: Westmere not compared (no direct convolutions without AVX2 + FMA)"
    ;;
  esac
  for cpu in "${cpus[@]}"; do
    run "$cpu" qemu-x86_64 -cpu "$cpu" "$bin" || cat "$out/$cpu-$m.log" >&2
    b=$(md5sum <"$out/$cpu-$m/checkpoint.bin" 2>/dev/null | cut -d' ' -f1 || echo missing)
    if [ "$a" = "$b" ]; then
      echo "$m: $cpu checkpoint identical to the native one ($a)"
    else
      echo "$m: $cpu checkpoint differs (native $a, $cpu $b)"
      status=1
    fi
  done
done
exit $status
