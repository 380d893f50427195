#!/usr/bin/env python3
"""Train the same networks in PyTorch and in approxtrain, side by side.

For each network the script alternates, `--repeats` times, one timed run of
`approxtrain bench train` (fp32 and the approximate multipliers given) with
one timed run of the same network in PyTorch on the CPU: the same threads,
batch size, optimizer, data and amount of work. It prints the medians and the
ratios to PyTorch fp32. The machine may be noisy: only ratios taken in one
run of this script mean much.

`--device cuda` runs both on the GPU (approxtrain `bench train --device
cuda`; PyTorch eager with TF32 off, the data on the GPU, the clock read
after `torch.cuda.synchronize()`); `--threads` then sets the host threads.

What is timed (as `approxtrain bench train` times it):
- lenet300100, lenet5: one epoch over the 60,000 MNIST training images,
  shuffled, SGD with momentum 0.9, lr 0.01;
- resnet20: one epoch over the first `--resnet-images` CIFAR-10 training
  images (default 8 batches), same optimizer, no augmentation;
- transformer: `--lm-steps` AdamW steps (weight decay 0.1, lr 1e-3, gradient
  clipping at 1) of the default model (4 pre-LN blocks, width 128, 4 heads,
  context 128, tied head) on random windows of the Shakespeare text, after
  one untimed step.

Usage:
    python3 -m venv venv && venv/bin/pip install torch numpy
    cargo build --release
    venv/bin/python scripts/compare-pytorch.py --data-dir ../shared/datasets \
        --threads 2 --repeats 3 [--nets lenet5,resnet20] [--multiplier fp32,mbm:7]
"""

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NETS = ["lenet300100", "lenet5", "resnet20", "transformer"]

# Where PyTorch trains (`--device`).
DEVICE = torch.device("cpu")

# Per-channel CIFAR-10 statistics (the values approxtrain normalises with).
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]


# ---------------------------------------------------------------- data


def read_idx(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(folder, stem):
    for name in (stem + ".gz", stem):
        p = folder / name
        if p.exists():
            return p
    sys.exit(f"error: {folder / stem}(.gz) not found; pass --data-dir DIR holding mnist/, cifar-10/, ...")


def load_mnist(data_dir):
    folder = data_dir / "mnist"
    x = read_idx(find(folder, "train-images-idx3-ubyte")).astype(np.float32) / 255.0
    y = read_idx(find(folder, "train-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


def load_cifar(data_dir, limit):
    folder = data_dir / "cifar-10"
    rows = []
    for i in range(1, 6):
        raw = np.fromfile(folder / f"data_batch_{i}.bin", dtype=np.uint8).reshape(-1, 3073)
        rows.append(raw)
        if sum(len(r) for r in rows) >= limit:
            break
    raw = np.concatenate(rows)[:limit]
    y = raw[:, 0].astype(np.int64)
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    mean = np.array(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy((x - mean) / std), torch.from_numpy(y)


def load_text(path):
    text = Path(path).read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], dtype=np.int64)
    split = len(ids) * 9 // 10
    return torch.from_numpy(ids[:split]), len(vocab)


# ---------------------------------------------------------------- models


def lenet300100():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


class BasicBlock(nn.Module):
    """He et al. 2016, CIFAR variant, option-A (zero-padding) shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            short = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


def resnet20():
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for s, width in enumerate([16, 32, 64]):
        for b in range(3):
            layers.append(BasicBlock(cin, width, 2 if s > 0 and b == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.heads = heads

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        shape = (n, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Transformer(nn.Module):
    """The default approxtrain Transformer: 4 pre-LN blocks, width 128,
    4 heads, context 128, learned positions, tied head."""

    def __init__(self, vocab, c=128, heads=4, layers=4, context=128):
        super().__init__()
        self.tok = nn.Embedding(vocab, c)
        self.pos = nn.Embedding(context, c)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.tok.weight.t()


# ---------------------------------------------------------------- PyTorch timing


def sync():
    """Wait for the GPU's queued work (nothing on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def torch_epoch(model, x, y, batch, lr=0.01):
    """One shuffled epoch of SGD (momentum 0.9): seconds."""
    model = model.to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    sync()
    start = time.perf_counter()
    order = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    sync()
    return time.perf_counter() - start


def torch_lm_steps(model, ids, steps, batch, context=128):
    model = model.to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)

    def step():
        starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=gen)
        xb = torch.stack([ids[s : s + context] for s in starts])
        yb = torch.stack([ids[s + 1 : s + context + 1] for s in starts])
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - start


# ---------------------------------------------------------------- approxtrain timing


def approxtrain_run(args, net):
    cmd = [args.approxtrain, "--threads", str(args.threads), "bench", "train", "--net", net, "--json",
           "--multiplier", ",".join(args.multiplier), "--repeats", "1", "--device", args.device]
    if net == "transformer":
        cmd += ["--dataset", f"text:{args.text}", "--steps", str(args.lm_steps),
                "--batch-size", str(args.lm_batch)]
    else:
        cmd += ["--data-dir", str(args.data_dir), "--batch-size", str(args.batch)]
        if net.startswith("resnet"):
            cmd += ["--images", str(args.resnet_images)]
    if args.profile:
        cmd.append("--profile")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            if row.get("bench") == "train":
                rows[row["multiplier"]] = row["seconds"]
    return rows


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("APPROXTRAIN_DATA", "../shared/datasets")))
    p.add_argument("--text", default=None, help="text file for the transformer [DATA_DIR/shakespeare/first-folio.txt]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lm-batch", type=int, default=32)
    p.add_argument("--lm-steps", type=int, default=10)
    p.add_argument("--resnet-images", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nets", default=",".join(NETS))
    p.add_argument("--multiplier", default="fp32,mbm:7")
    p.add_argument("--approxtrain", default="target/release/approxtrain")
    p.add_argument("--profile", action="store_true", help="also print approxtrain's per-op breakdown (stderr)")
    p.add_argument("--json", action="store_true", help="print one JSON object per network")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where both frameworks train (cuda: PyTorch eager, TF32 off)")
    args = p.parse_args()
    args.multiplier = [m for m in args.multiplier.split(",") if m]
    if "fp32" not in args.multiplier:
        args.multiplier.insert(0, "fp32")
    if args.text is None:
        args.text = str(args.data_dir / "shakespeare" / "first-folio.txt")
    if not Path(args.approxtrain).exists():
        sys.exit(f"error: {args.approxtrain} not found; run `cargo build --release` or pass --approxtrain PATH")

    global DEVICE
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda: PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    gpu = f"; GPU: {torch.cuda.get_device_name()} (TF32 off)" if args.device == "cuda" else ""
    print(f"# CPU: {cpu}; {args.threads} threads{gpu}; torch {torch.__version__}; "
          f"medians of {args.repeats} alternating runs", flush=True)

    nets = [n for n in args.nets.split(",") if n]
    results = []
    mnist = cifar = text = None
    for net in nets:
        if net in ("lenet300100", "lenet5"):
            mnist = mnist or tuple(t.to(DEVICE) for t in load_mnist(args.data_dir))
            x, y = mnist
            make = {"lenet300100": lenet300100, "lenet5": lenet5}[net]
            work, unit = len(x), "images"
            run_torch = lambda: torch_epoch(make(), x, y, args.batch)
        elif net == "resnet20":
            cifar = cifar or tuple(t.to(DEVICE) for t in load_cifar(args.data_dir, args.resnet_images))
            x, y = cifar
            work, unit = len(x), "images"
            run_torch = lambda: torch_epoch(resnet20(), x, y, args.batch)
        elif net == "transformer":
            text = text or load_text(args.text)
            ids, vocab = text[0].to(DEVICE), text[1]
            work, unit = args.lm_steps, "steps"
            run_torch = lambda: torch_lm_steps(Transformer(vocab), ids, args.lm_steps, args.lm_batch)
        else:
            sys.exit(f"error: unknown net {net}; choose from {', '.join(NETS)}")
        torch_times, ours = [], {}
        for r in range(args.repeats):
            for label, sec in approxtrain_run(args, net).items():
                ours.setdefault(label, []).append(sec)
            torch_times.append(run_torch())
            print(f"  {net} repeat {r + 1}: torch {torch_times[-1]:.2f} s, "
                  + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in ours.items()), file=sys.stderr, flush=True)
        base = statistics.median(torch_times)
        row = {"net": net, "work": work, "unit": unit, "threads": args.threads,
               "pytorch_fp32_s": base, "approxtrain_s": {k: statistics.median(v) for k, v in ours.items()}}
        results.append(row)
        if args.json:
            print(json.dumps(row), flush=True)

    if not args.json:
        labels = args.multiplier
        head = f"{'net':<13}{'work':>12}{'pytorch fp32':>14}" + "".join(
            f"{'at ' + l:>14}{'/ pytorch':>11}" for l in labels)
        print(head)
        for row in results:
            line = f"{row['net']:<13}{str(row['work']) + ' ' + row['unit']:>12}{row['pytorch_fp32_s']:>12.2f} s"
            for l in labels:
                s = row["approxtrain_s"].get(l, math.nan)
                line += f"{s:>12.2f} s{s / row['pytorch_fp32_s']:>10.2f}x"
            print(line)
        print("(seconds for the same work; 'x' is time relative to PyTorch fp32: lower is faster; "
              "speed relative to PyTorch = 1 / x)")


if __name__ == "__main__":
    main()
