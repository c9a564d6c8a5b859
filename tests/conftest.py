import sys
from pathlib import Path

# Make tests/onnx_builders.py importable as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

# Session-wide exported models (torch export is slow: export once per test session).
pytest_plugins = ["model_fixtures"]
