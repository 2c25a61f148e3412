from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF, fetched once into the cache by scripts/fetch-test-model."""
    env = dict(os.environ, PYTHON=os.environ.get("PYTHON", "python3"))
    out = subprocess.run([str(REPO / "scripts" / "fetch-test-model")], env=env, check=True,
                         capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])
