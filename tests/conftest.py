import sys
from pathlib import Path

import pytest

# Make tests/onnx_builders.py importable as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

from waveopt.models import one_torch_thread  # noqa: E402

# Session-wide exported models (torch export is slow: export once per test session).
pytest_plugins = ["model_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _torch_on_one_thread():
    """The PyTorch references run step by step on tiny products: one thread (models/threads.py)."""
    with one_torch_thread():
        yield
