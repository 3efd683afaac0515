"""Test models: deterministic, quick to build, and with codebooks that real audio uses."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tokpack.codec import testmodels
from tokpack.codec.audio import resample
from tokpack.codec.engine import encode_array
from tokpack.codec.registry import get_spec
from tokpack.codec.weights import weights_sha256


@pytest.fixture(scope="module")
def speech_10s(corpus_dir):
    """10 s of real speech (Allison, 8 kHz) resampled to 24 kHz, float32 [frames, 1]."""
    x, rate = sf.read(corpus_dir / "real" / "speech_en_f_allison_8k.wav", dtype="float32")
    y = resample(torch.from_numpy(x)[None], rate, 24_000)[0].numpy()
    return y[: 10 * 24_000, None]


def distinct_codes(tokens: np.ndarray) -> list[int]:
    return [len(np.unique(row)) for row in tokens[0]]


def test_24khz_codebooks_are_diverse_on_speech(test_24khz, speech_10s):
    enc = encode_array(speech_10s, 24_000, test_24khz, 24.0, threads=2)
    counts = distinct_codes(enc.tokens)
    assert len(counts) == 32
    assert min(counts[:8]) >= 64, counts
    assert min(counts) >= 16, counts  # the deep levels are used too


def test_48khz_codebooks_are_diverse_on_speech(test_48khz, speech_10s):
    stereo48 = resample(torch.from_numpy(speech_10s.T.copy()), 24_000, 48_000).numpy().T
    enc = encode_array(np.repeat(stereo48, 2, axis=1), 48_000, test_48khz, 24.0, threads=2)
    counts = distinct_codes(enc.tokens)
    assert len(counts) == 16
    assert min(counts[:8]) >= 64, counts


def test_build_is_deterministic_and_thread_independent(test_24khz):
    """A rebuild at another ambient thread count gives the same weights and leaves
    torch's thread count as it was. (Build time is measured by scripts/bench_codec.py.)"""
    spec = get_spec("test_24khz")
    before = torch.get_num_threads()
    other = 2 if before != 2 else 1
    torch.set_num_threads(other)
    try:
        state = testmodels.build_test_state_dict(spec)
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
    assert weights_sha256(state) == test_24khz.weights_sha256


@pytest.mark.parametrize("fixture", ["test_24khz", "test_48khz"])
def test_codebook_buffers_are_consistent(fixture, request):
    loaded = request.getfixturevalue(fixture)
    for layer in loaded.model.quantizer.vq.layers:
        book = layer._codebook
        assert book.inited.item() == 1.0
        assert torch.equal(book.embed, book.embed_avg)
        assert book.cluster_size.sum().item() == testmodels.TRAIN_FRAMES
        assert len(torch.unique(book.embed, dim=0)) > 900  # few dead (duplicate) codes


def test_synthetic_training_audio():
    a = testmodels.synthetic_training_audio(24_000, 1, 4.0)
    b = testmodels.synthetic_training_audio(24_000, 1, 4.0)
    assert a.shape == (1, 96_000) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert 0 < np.abs(a).max() <= 0.98
    s = testmodels.synthetic_training_audio(48_000, 2, 2.0)
    assert s.shape == (2, 96_000) and not np.array_equal(s[0], s[1])
    # on the 16-bit grid, which absorbs numpy's CPU-dependent float64 rounding (recipe 5)
    steps = a.astype(np.float64) * testmodels.AUDIO_GRID_STEPS
    assert np.array_equal(steps, np.round(steps)) and len(np.unique(a)) > 10_000


def test_synthetic_training_audio_is_the_same_with_numpys_baseline_code():
    """numpy runs sin/exp/log in SIMD code chosen per CPU (X86_V3, X86_V4, AVX512_ICL...),
    whose float64 results differ by a few ulps; with every dispatched target disabled it
    runs the code of a CPU with none of them. Without the grid (recipe 5) 5 of 576,000
    samples of test_mimi's training audio differed on an AVX-512 CPU."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__ as dispatched
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__ as dispatched
    code = ("import hashlib; from tokpack.codec.testmodels import synthetic_training_audio as s; "
            "print(hashlib.sha256(s(24_000, 1, 24.0, seed=20240601).tobytes()).hexdigest())")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(dispatched)}
    baseline = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    here = testmodels.synthetic_training_audio(24_000, 1, 24.0, seed=20240601)
    assert baseline == hashlib.sha256(here.tobytes()).hexdigest()
