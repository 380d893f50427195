#!/usr/bin/env python3
"""Train a MobileNet-style network written in plain PyTorch on CIFAR-10 with
every product of its convolutions and its classifier through an approximate
multiplier (mbm:7) and, for comparison, in fp32.

Nothing in the model knows about approxtrain: `approxtrain.torch.convert`
swaps its `nn.Conv2d` (including the depthwise ones, `groups=channels`) and
`nn.Linear` layers for approximate ones. Each run writes
`OUT/RUN_ID/metrics.csv` with the CLI's columns (one row per evaluation) and a
`run.toml`, so `approxtrain plot OUT` draws the curves next to CLI runs.

    pip install ./python torch
    python python/examples/cifar10_mobilenet.py --data-dir ../shared/datasets \\
        --steps 300 --out runs/mobilenet
    approxtrain plot runs/mobilenet
"""

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import approxtrain.torch as att

# Per-channel CIFAR-10 statistics (the values approxtrain normalises with).
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)
COLUMNS = ["run_id", "net", "dataset", "plan", "seed", "epoch", "step", "train_loss", "train_accuracy",
           "test_loss", "test_accuracy", "seconds", "macs"]


def load_cifar(folder, files, limit):
    """CIFAR-10 binary batches (`<label byte><3072 pixel bytes>` records)."""
    rows = []
    for name in files:
        path = folder / name
        if not path.exists():
            raise SystemExit(f"error: {path} not found; give --data-dir with a cifar-10/ folder of binary batches")
        rows.append(np.fromfile(path, dtype=np.uint8).reshape(-1, 3073))
    raw = np.concatenate(rows)[:limit]
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy((x - MEAN) / STD), torch.from_numpy(raw[:, 0].astype(np.int64))


def separable(cin, cout, stride):
    """MobileNet's depthwise-separable block (Howard et al., 2017)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )


def mobilenet_small(classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        separable(32, 64, 1), separable(64, 128, 2), separable(128, 128, 1),
        separable(128, 256, 2), separable(256, 256, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes),
    )


def macs_per_image(model):
    """Multiply-accumulates of one image's forward pass through the
    converted layers."""
    total = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total.append(out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        else:
            total.append(m.in_features * m.out_features)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return sum(total)


def evaluate(model, x, y, batch=500):
    model.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i : i + batch])
            loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(x), correct / len(x)


def write_run_toml(path, run_id, plan, args, evals, test_accuracy):
    path.write_text(f"""# Written by python/examples/cifar10_mobilenet.py (a PyTorch model through approxtrain.torch).
[run]
run_id = "{run_id}"
status = "finished"
epochs_completed = {evals}
test_accuracy = {test_accuracy}
data = "{args.data_dir / 'cifar-10'}"

[spec]
net = "mobilenet-small"
dataset = "cifar10"
multiplier = "{plan}"
epochs = {evals}
batch_size = {args.batch}
eval_batch_size = 500
seed = {args.seed}
threads = {args.threads}

[spec.optimizer]
kind = "sgd"
lr = {args.lr}
momentum = 0.9
nesterov = true
weight_decay = 0.0005
beta1 = 0.9
beta2 = 0.999
eps = 0.00000001

[spec.schedule]
kind = "cosine"
step_epochs = 5
gamma = 0.1
warmup_epochs = 0
""")


def train(plan, args, data):
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(args.seed)
    model = mobilenet_small()
    att.convert(model, plan)
    macs = macs_per_image(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    # A folder name without ':' or '=' (mbm:7 -> mbm7), as the CLI names runs.
    tag = plan.replace(":", "").replace("=", "-").replace(",", "_")
    run_id = f"mobilenet-small-cifar10-{tag}-s{args.seed}"
    out = args.out / run_id
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    rows, seen, loss_sum, correct, t0, step = [], 0, 0.0, 0, time.perf_counter(), 0
    while step < args.steps:
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr) - args.batch + 1, args.batch):
            model.train()
            idx = order[i : i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            # Random horizontal flips, as the CLI's cifar10 augmentation.
            flip = torch.rand(len(xb), generator=gen) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(xb)
            loss_sum += loss.item() * len(xb)
            correct += (logits.argmax(1) == yb).sum().item()
            if step % args.eval_every == 0 or step == args.steps:
                seconds = time.perf_counter() - t0
                test_loss, test_acc = evaluate(model, xte, yte)
                rows.append([run_id, "mobilenet-small", "cifar10", plan, args.seed, len(rows) + 1, step,
                             loss_sum / seen, correct / seen, test_loss, test_acc, round(seconds, 3),
                             3 * macs * seen])
                print(f"{plan:8s} step {step:4d}: train loss {loss_sum / seen:.3f} acc {correct / seen:.3f}, "
                      f"test loss {test_loss:.3f} acc {test_acc:.3f} ({seconds:.1f} s)", flush=True)
                seen, loss_sum, correct, t0 = 0, 0.0, 0, time.perf_counter()
            if step == args.steps:
                break
    tmp = out / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    os.replace(tmp, out / "metrics.csv")
    write_run_toml(out / "run.toml", run_id, plan, args, len(rows), rows[-1][10])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("APPROXTRAIN_DATA", "../shared/datasets")))
    p.add_argument("--out", type=Path, default=Path("runs/mobilenet"))
    p.add_argument("--plans", default="fp32,mbm:7", help="comma-separated plans (CLI syntax)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--train-images", type=int, default=50000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    att.set_threads(args.threads)
    folder = args.data_dir / "cifar-10"
    data = (load_cifar(folder, [f"data_batch_{i}.bin" for i in range(1, 6)], args.train_images),
            load_cifar(folder, ["test_batch.bin"], args.test_images))
    for plan in args.plans.split(","):
        train(plan.strip(), args, data)


if __name__ == "__main__":
    main()
