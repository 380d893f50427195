"""approxtrain: neural-network products on simulated approximate multipliers.

Every multiplication of a matrix product or convolution goes through a
multiplier: ``fp32``, ``bf16``, a C model tabulated at some mantissa width
(AMSim, e.g. ``"mbm:7"``), a table file (``"lut:MBM_7.bin"``). The arithmetic
is the CLI's, bit for bit (DESIGN.md, "The arithmetic").

NumPy level::

    import numpy as np, approxtrain as at
    a = np.random.rand(64, 128).astype(np.float32)
    b = np.random.rand(128, 32).astype(np.float32)
    c = at.matmul(a, b, "mbm:7")           # (64, 32), every product through MBM
    c = at.matmul(a, b.T.T, at.Multiplier("mitchell:7"), threads=2)

Arrays are float32; matrix operands may be C- or F-ordered (a transpose costs
no copy), convolution operands C-ordered. ``threads=`` sets the worker count as
the CLI's ``--threads`` does (default: one per core). The GIL is released while
the engine runs. PyTorch layers are in :mod:`approxtrain.torch`.
"""

from ._native import (
    Lut,
    Multiplier,
    Plan,
    bmm,
    characterize,
    conv2d,
    conv2d_grad_input,
    conv2d_grad_weight,
    load_plan_file,
    matmul,
    models,
)

__all__ = [
    "Lut",
    "Multiplier",
    "Plan",
    "bmm",
    "characterize",
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "load_plan_file",
    "matmul",
    "models",
]
