#!/usr/bin/env python3
"""Cut the MNIST subset shipped in data-subset/mnist from the full MNIST.

Usage: scripts/make-mnist-subset.py SRC_DIR DST_DIR [--train N] [--test N]

SRC_DIR holds the four IDX files of the full MNIST (gzipped or not); DST_DIR
receives the first N training and first N test records in the same format,
gzip level 9 with a zero mtime and no file name so that the output is
reproducible byte for byte. Prints the md5 of each written file (stored .gz
and uncompressed) for data-subset/mnist/README.md.
"""
import argparse
import gzip
import hashlib
import os
import struct
import sys


def read_idx(src_dir, stem):
    for name, opener in ((stem + ".gz", gzip.open), (stem, open)):
        path = os.path.join(src_dir, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                return f.read()
    sys.exit(f"error: neither {stem}.gz nor {stem} in {src_dir}")


def head(data, count, magic):
    """The first `count` records of an IDX file with the given magic."""
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"error: magic {found:#010x}, expected {magic:#010x}")
    ndim = data[3]
    dims = list(struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim]))
    if count > dims[0]:
        sys.exit(f"error: asked for {count} records, file has {dims[0]}")
    record = 1
    for d in dims[1:]:
        record *= d
    body = 4 + 4 * ndim
    dims[0] = count
    header = data[:4] + struct.pack(">" + "I" * ndim, *dims)
    return header + data[body : body + count * record]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src_dir")
    p.add_argument("dst_dir")
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--test", type=int, default=1000)
    a = p.parse_args()
    os.makedirs(a.dst_dir, exist_ok=True)
    jobs = [
        ("train-images-idx3-ubyte", a.train, 0x803),
        ("train-labels-idx1-ubyte", a.train, 0x801),
        ("t10k-images-idx3-ubyte", a.test, 0x803),
        ("t10k-labels-idx1-ubyte", a.test, 0x801),
    ]
    for stem, count, magic in jobs:
        raw = head(read_idx(a.src_dir, stem), count, magic)
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        out = os.path.join(a.dst_dir, stem + ".gz")
        with open(out + ".tmp", "wb") as f:
            f.write(packed)
        os.replace(out + ".tmp", out)
        print(
            f"| {stem}.gz | {count} | {len(packed)} | "
            f"{hashlib.md5(packed).hexdigest()} | {hashlib.md5(raw).hexdigest()} |"
        )


if __name__ == "__main__":
    main()
