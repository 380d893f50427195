"""Shared pytest fixtures: a fresh seed per test, printed for replay."""

import os
import time

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A generator seeded from $APPROXTRAIN_TEST_SEED or the clock; the seed
    is printed so that a failure can be replayed."""
    seed = int(os.environ.get("APPROXTRAIN_TEST_SEED", time.time_ns() % (2**63)))
    print(f"seed = {seed} (rerun with APPROXTRAIN_TEST_SEED={seed})")
    return np.random.default_rng(seed)


def random_f32(rng, shape):
    """Values of both signs over several binades (so that exponents, not only
    mantissas, vary)."""
    mag = rng.uniform(-2.0, 2.0, size=shape) * 2.0 ** rng.integers(-4, 4, size=shape)
    return mag.astype(np.float32)


def require(module):
    """Import `module` or skip saying why; with APPROXTRAIN_REQUIRE_PYTHON_DEPS
    set (CI) a missing module fails instead."""
    try:
        return __import__(module)
    except ImportError as e:
        if os.environ.get("APPROXTRAIN_REQUIRE_PYTHON_DEPS"):
            raise
        pytest.skip(f"{module} is not installed ({e}); pip install {module} to run this test")


def pytest_sessionfinish(session, exitstatus):
    """With APPROXTRAIN_REQUIRE_PYTHON_DEPS set (CI), a skipped test fails
    the run."""
    if not os.environ.get("APPROXTRAIN_REQUIRE_PYTHON_DEPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        print(f"\n{len(skipped)} test(s) skipped with APPROXTRAIN_REQUIRE_PYTHON_DEPS set: failing")
        session.exitstatus = 1
