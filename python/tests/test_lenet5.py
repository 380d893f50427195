"""A LeNet-5 written in plain PyTorch and converted with mbm:7 reproduces the
CLI's LeNet-5 (`approxtrain train --net lenet5`) on the same weights: the
same logits and weight gradients, bit for bit. Bias gradients are plain sums
of the output gradient (no products), which PyTorch takes in its own order:
they are compared with a tolerance."""

import numpy as np

import approxtrain as at
from approxtrain._native import lenet5_reference
from conftest import require

torch = require("torch")
att = __import__("approxtrain.torch", fromlist=["convert"])
nn = torch.nn


class LeNet5(nn.Module):
    """LeNet-5 as the CLI builds it: conv 5x5 (pad 2) - ReLU - max pool 2 -
    conv 5x5 - ReLU - max pool 2 - 400-120-84-10 with ReLUs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_converted_pytorch_lenet5_reproduces_the_cli_lenet5_bit_exactly(rng):
    seed = int(rng.integers(1 << 30))
    x = rng.uniform(0.0, 1.0, size=(8, 1, 28, 28)).astype(np.float32)
    dlogits = (rng.standard_normal((8, 10)) / 8).astype(np.float32)
    logits, params = lenet5_reference(x, dlogits, "mbm:7", seed)

    model = LeNet5()
    state = {}
    for name, value, _ in params:
        # Dense weights are [IN, OUT] in the CLI, [OUT, IN] in nn.Linear.
        state[name] = torch.from_numpy(value.T.copy() if name.startswith("fc") and name.endswith("weight") else value)
    model.load_state_dict(state)
    att.convert(model, "mbm:7")

    xt = torch.from_numpy(x)
    out = model(xt)
    assert np.array_equal(out.detach().numpy().view(np.uint32), logits.view(np.uint32))
    out.backward(torch.from_numpy(dlogits))
    torch_params = dict(model.named_parameters())
    for name, _, grad in params:
        got = torch_params[name].grad.numpy()
        if name.endswith("weight"):
            if name.startswith("fc"):
                got = got.T
            assert np.array_equal(np.ascontiguousarray(got).view(np.uint32), grad.view(np.uint32)), name
        else:
            np.testing.assert_allclose(got, grad, rtol=1e-5, atol=1e-6, err_msg=name)
    # And the fp32 reference differs from it: the test tells the plans apart.
    fp32_logits, _ = lenet5_reference(x, dlogits, at.Plan("fp32"), seed)
    assert not np.array_equal(fp32_logits, logits)
