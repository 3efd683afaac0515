"""Shared fixtures: a fresh model cache per session, synthetic signals, the corpus.

Kept generic on purpose: anything specific to one test module lives in that module.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

#: the public corpus sits beside the repository: <repo>/../shared/corpus
CORPUS_DIR = (Path(__file__).parents[1] / ".." / "shared" / "corpus").resolve()


@pytest.fixture(scope="session", autouse=True)
def tokpack_cache(tmp_path_factory) -> Path:
    """A session-wide, initially empty TOKPACK_CACHE, so test models are built fresh
    (as in CI) and nothing is read from or written to the user's cache. Also clears
    TOKPACK_WEIGHTS, which would override every model's weights, and points the Hugging
    Face cache at an empty folder, offline (no test reads the user's or the Hub's)."""
    cache = tmp_path_factory.mktemp("tokpack-cache")
    names = ("TOKPACK_CACHE", "TOKPACK_WEIGHTS", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["TOKPACK_CACHE"] = str(cache)
    os.environ.pop("TOKPACK_WEIGHTS", None)
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def test_24khz(tokpack_cache):
    """The test_24khz model, built and loaded once per session."""
    from tokpack.codec.weights import load_model

    return load_model("test_24khz")


@pytest.fixture(scope="session")
def test_48khz(tokpack_cache):
    """The test_48khz model, built and loaded once per session."""
    from tokpack.codec.weights import load_model

    return load_model("test_48khz")


@pytest.fixture(scope="session")
def test_mimi(tokpack_cache):
    """The test_mimi model (transformers' MimiModel), built and loaded once per session."""
    pytest.importorskip("transformers")
    from tokpack.codec.weights import load_model

    return load_model("test_mimi")


@pytest.fixture(scope="session")
def test_dac_44khz(tokpack_cache):
    """The test_dac_44khz model (transformers' DacModel), built and loaded once per session."""
    pytest.importorskip("transformers")
    from tokpack.codec.weights import load_model

    return load_model("test_dac_44khz")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS_DIR.is_dir():
        pytest.skip(f"the audio corpus is not at {CORPUS_DIR} (expected ../shared/corpus "
                    f"beside the repository)")
    return CORPUS_DIR


class Signals:
    """Deterministic synthetic audio, float32 [frames, channels]."""

    @staticmethod
    def sine(frames: int, rate: int = 24_000, channels: int = 1, freq: float = 440.0,
             amp: float = 0.5) -> np.ndarray:
        t = np.arange(frames) / rate
        # channel c is detuned by c %, so channel mixing bugs show
        cols = [amp * np.sin(2 * np.pi * freq * (1 + 0.01 * c) * t) for c in range(channels)]
        return np.stack(cols, axis=1).astype(np.float32)

    @staticmethod
    def noise(frames: int, channels: int = 1, amp: float = 0.1, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return (amp * rng.standard_normal((frames, channels))).astype(np.float32)

    @staticmethod
    def chirp(frames: int, rate: int = 24_000, channels: int = 1, f0: float = 100.0,
              f1: float = 4000.0, amp: float = 0.4) -> np.ndarray:
        t = np.arange(frames) / rate
        dur = max(frames / rate, 1e-9)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur))
        return np.repeat((amp * np.sin(phase))[:, None], channels, axis=1).astype(np.float32)

    @staticmethod
    def wav_bytes(data: np.ndarray, rate: int, subtype: str = "FLOAT",
                  format: str = "WAV") -> io.BytesIO:
        """An in-memory audio file of ``data``, rewound, as callers pass stdin."""
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, data, rate, subtype=subtype, format=format)
        buf.seek(0)
        return buf

    @staticmethod
    def write(path: Path, data: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
        import soundfile as sf

        sf.write(path, data, rate, subtype=subtype)
        return path


@pytest.fixture(scope="session")
def signals() -> type[Signals]:
    return Signals


_FACTS_KEY = pytest.StashKey[dict]()


@pytest.fixture
def record_fact(request):
    """``record_fact(name, value)``: a fact about this machine, printed after the run."""
    facts = request.config.stash.setdefault(_FACTS_KEY, {})
    return facts.__setitem__


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """What the run's results depend on (tests/test_environment.py): printed on every run."""
    import platform
    import sys

    facts = {"python": platform.python_version(), "cores": os.cpu_count()}
    if "torch" in sys.modules:
        import torch

        facts["torch"] = torch.__version__
    for var in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                "OMP_NUM_THREADS"):
        if os.environ.get(var):
            facts[var] = os.environ[var]
    facts.update(config.stash.get(_FACTS_KEY, {}))
    cpu = _cpu_model()
    if cpu:
        facts["cpu"] = cpu
    terminalreporter.write_line("tokpack test environment: " +
                                "; ".join(f"{k} {v}" for k, v in facts.items()))


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), None)
    flags = next((set(line.split(":", 1)[1].split()) for line in lines
                  if line.startswith("flags")), set())
    isa = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX"))
           if flag in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"
