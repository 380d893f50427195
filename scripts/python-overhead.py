#!/usr/bin/env python3
"""The cost of the Python front end: approxtrain from Python against the CLI
on the same machine, same threads, in one run of this script.

1. `approxtrain.matmul` at 1024^3 with mbm:7 against
   `approxtrain bench gemm --m 1024 --n 1024 --k 1024 --multiplier mbm:7`
   (medians; the CLI reports its own median of 5 repeats per call).
2. Training steps of ResNet-20 written in PyTorch (scripts/compare-pytorch.py's
   definition), converted with `approxtrain.torch.convert(model, "mbm:7")`,
   against `approxtrain bench train --net resnet20 --multiplier fp32,mbm:7`
   and against the same PyTorch model unconverted (native fp32): one epoch of
   the first `--images` CIFAR-10 training images, SGD with momentum, as
   compare-pytorch.py times it. Images per second, medians of alternating
   repeats.

Usage:
    cargo build --release && pip install ./python torch
    python scripts/python-overhead.py --data-dir ../shared/datasets --threads 2
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import approxtrain as at
import approxtrain.torch as att

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("compare_pytorch", HERE / "compare-pytorch.py")
cp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cp)


def cli_gemm_seconds(args):
    cmd = [args.approxtrain, "--threads", str(args.threads), "bench", "gemm", "--m", "1024", "--n", "1024",
           "--k", "1024", "--multiplier", "mbm:7", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    return next(r["seconds"] for r in rows if r.get("multiplier") == "mbm:7")


def python_gemm_seconds(a, b, threads, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.matmul(a, b, "mbm:7", threads=threads)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--approxtrain", default="target/release/approxtrain")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    att.set_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; {args.threads} threads; torch {torch.__version__}")

    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1024, 1024)).astype(np.float32)
    b = rng.uniform(-1, 1, (1024, 1024)).astype(np.float32)
    at.matmul(a, b, "mbm:7", threads=args.threads)  # builds the table once
    cli, py = [], []
    for _ in range(args.repeats + 2):
        cli.append(cli_gemm_seconds(args))
        py.append(python_gemm_seconds(a, b, args.threads))
    c, q = statistics.median(cli), statistics.median(py)
    print(f"gemm 1024^3 mbm:7: CLI {c * 1e3:.1f} ms, Python {q * 1e3:.1f} ms, Python/CLI {q / c:.3f}"
          f" (medians of {len(cli)}; each CLI value its own median of 5)")

    x, y = cp.load_cifar(args.data_dir, args.images)
    args.multiplier = ["fp32", "mbm:7"]
    args.resnet_images, args.profile = args.images, False
    runs = {"CLI fp32": [], "CLI mbm:7": [], "PyTorch fp32": [], "PyTorch+convert mbm:7": []}
    for _ in range(args.repeats):
        cli = cp.approxtrain_run(args, "resnet20")
        runs["CLI fp32"].append(cli["fp32"])
        runs["CLI mbm:7"].append(cli["mbm:7"])
        torch.manual_seed(0)
        runs["PyTorch fp32"].append(cp.torch_epoch(cp.resnet20(), x, y, args.batch))
        torch.manual_seed(0)
        model = att.convert(cp.resnet20(), "mbm:7")
        runs["PyTorch+convert mbm:7"].append(cp.torch_epoch(model, x, y, args.batch))
    print(f"ResNet-20 training, {args.images} CIFAR-10 images, batch {args.batch}, medians of {args.repeats}:")
    for name, secs in runs.items():
        s = statistics.median(secs)
        print(f"  {name:24s} {s:7.2f} s  {args.images / s:8.1f} images/s   runs: {', '.join(f'{v:.2f}' for v in secs)}")


if __name__ == "__main__":
    main()
