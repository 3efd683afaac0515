"""Every valid corpus file encodes and decodes to its own length, rate and channels.

The whole sweep (real/, variants/, the finite edge/ files) runs on test_24khz; a few
files also on test_48khz. scripts/bench_codec.py times the same work.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import soundfile as sf

from tokpack.codec.engine import decode, encode

CORPUS_DIR = (Path(__file__).parents[1] / ".." / "shared" / "corpus").resolve()

SKIP_EDGE = {"nan_inf_float_24k.wav"}  # rejected on purpose (test_codec_audio)


def corpus_files(*folders: str) -> list:
    if not CORPUS_DIR.is_dir():
        reason = f"the audio corpus is not at {CORPUS_DIR} (expected ../shared/corpus)"
        return [pytest.param("", marks=pytest.mark.skip(reason=reason))]
    return sorted(
        f"{folder}/{p.name}" for folder in folders for p in (CORPUS_DIR / folder).iterdir()
        if p.is_file() and p.name not in SKIP_EDGE
    )


def check_roundtrip(path, loaded):
    info = sf.info(path)
    tpk = io.BytesIO()
    er = encode(path, tpk, model=loaded)
    out = io.BytesIO()
    dr = decode(io.BytesIO(tpk.getvalue()), out, model=loaded)
    got = sf.info(io.BytesIO(out.getvalue()))
    assert (got.frames, got.samplerate, got.channels) == (info.frames, info.samplerate,
                                                          info.channels)
    assert (dr.frames, dr.sample_rate, dr.channels) == (info.frames, info.samplerate,
                                                        info.channels)
    assert er.source_frames == info.frames and er.bytes_out == len(tpk.getvalue())
    return er, dr


@pytest.mark.parametrize("name", corpus_files("real", "variants", "edge"))
def test_corpus_file_roundtrips_24khz(name, corpus_dir, test_24khz):
    check_roundtrip(corpus_dir / name, test_24khz)


@pytest.mark.parametrize("name", [
    "variants/ch6_alsa_5_1_48k.wav",
    "variants/rate_22050_stereo.wav",
    "variants/wavex_pcm24_stereo_48k.wav",
    "edge/very_loud_float_48k_stereo.wav",
    "edge/one_sample_24k.wav",
])
def test_corpus_file_roundtrips_48khz(name, corpus_dir, test_48khz):
    check_roundtrip(corpus_dir / name, test_48khz)


def test_corpus_was_found(corpus_dir):
    assert len(corpus_files("real", "variants")) == 32
