from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF, fetched once into the cache by scripts/fetch-test-model."""
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run([str(REPO / "scripts" / "fetch-test-model")], env=env, check=True,
                         capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


@pytest.fixture
def daemon(tmp_path: Path):
    """A running daemon with an empty store of its own."""
    from tests.daemon import running_daemon

    with running_daemon(tmp_path) as running:
        yield running


@pytest.fixture
def model_daemon(tmp_path: Path, smollm2_gguf: Path):
    """A running daemon whose store holds smollm2:135m, laid out as Ollama writes it."""
    from tests.daemon import running_daemon
    from tests.ollama_layout import write_ollama_model

    write_ollama_model(tmp_path / ".ollama" / "models", smollm2_gguf)
    with running_daemon(tmp_path) as running:
        yield running
