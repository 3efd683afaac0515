"""Mimi and DAC through the whole pipeline: encode then decode keeps the source's rate,
channels and exact length (corpus files, synthetic odd lengths, 8-96 kHz, 1/2/6
channels), the engine's codes are the reference encode's, and the CLI runs them.

The full corpus sweep is marked slow (``pytest -m slow``); the default run takes a
sample of it that covers every rate, channel count and container format class."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("transformers")

import tokpack  # noqa: E402
from tokpack.formats import loads  # noqa: E402

from test_codec_corpus import check_roundtrip, corpus_files  # noqa: E402

#: the default run's sample of real/ and variants/, together 8, 16, 22.05, 44.1, 48 and
#: 96 kHz; mono, stereo, 5.1; WAV, RF64, Ogg, AIFF, u-law (DAC, the slower model on a CPU,
#: gets the shorter files)
SAMPLE = [("real/speech_espeak_en_us_22k.wav", "test_mimi"),
          ("variants/gnome_startup3_44k_stereo.ogg", "test_mimi"),
          ("variants/rf64_pcm16_8k.wav", "test_mimi"),
          ("variants/bigendian_aiff_pcm16_8k.aiff", "test_mimi"),
          ("variants/ulaw_8k.wav", "test_mimi"),
          ("variants/ch6_alsa_5_1_48k.wav", "test_dac_44khz"),
          ("variants/rate_96000_stereo.wav", "test_dac_44khz"),
          ("variants/rate_16000_stereo.wav", "test_dac_44khz")]
MODELS = ["test_mimi", "test_dac_44khz"]


@pytest.fixture(scope="module")
def loaded(request):
    """Both test models by name, loaded once per session."""
    return {name: request.getfixturevalue(name) for name in MODELS}


def roundtrip(path, model):
    """check_roundtrip's length, rate and channels, and ceil(samples / hop) token frames."""
    er, _ = check_roundtrip(path, model)
    info = sf.info(path)
    model_samples = -(-info.frames * model.spec.sample_rate // info.samplerate)
    assert er.token_frames == -(-model_samples // model.spec.hop_length)


@pytest.mark.parametrize("name, model", SAMPLE)
def test_corpus_sample_roundtrips(name, model, corpus_dir, loaded):
    roundtrip(corpus_dir / name, loaded[model])


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", corpus_files("real", "variants"))
def test_corpus_file_roundtrips(name, model, corpus_dir, loaded):
    roundtrip(corpus_dir / name, loaded[model])


@pytest.mark.parametrize("model", MODELS)
def test_odd_lengths_keep_their_length(model, loaded, signals):
    m = loaded[model]
    hop = m.spec.hop_length
    for frames, rate, channels in [(0, 24_000, 1), (1, 24_000, 1), (hop - 1, m.spec.sample_rate, 1),
                                   (hop, m.spec.sample_rate, 2), (hop + 1, m.spec.sample_rate, 1),
                                   (3 * hop + 7, 8_000, 6), (12_345, 96_000, 2)]:
        x = signals.chirp(frames, rate, channels)
        enc = tokpack.encode_array(x, rate, m)
        assert enc.tokens.dtype == np.uint16 and enc.tokens.max(initial=0) < m.spec.codebook_size
        model_samples = -(-frames * m.spec.sample_rate // rate)
        assert enc.tokens.shape == (1, m.spec.n_codebooks(m.spec.default_bandwidth),
                                    -(-model_samples // hop))
        y, got_rate = tokpack.decode_tokens(enc, model=m)
        assert (y.shape, got_rate) == ((frames, channels), rate), (frames, rate, channels)
        assert np.isfinite(y).all()


@pytest.mark.parametrize("model", MODELS)
def test_engine_codes_are_the_reference_encode(model, loaded, signals):
    """At the model's rate, mono, the engine's codes are those of transformers' one-pass
    encode on the same weights (reference_encode: what the model's own encode() gives):
    every frame but the last (its padding differs, see the family's module) and a few
    near-ties at most."""
    import torch

    m = loaded[model]
    family = __import__(f"tokpack.codecs.{m.spec.family}.model", fromlist=["reference_encode"])
    rate = m.spec.sample_rate
    x = 0.5 * signals.chirp(4 * rate + 333, rate)[:, 0] + signals.noise(4 * rate + 333, amp=0.02)[:, 0]
    n_q = m.spec.max_codebooks
    enc = tokpack.encode_array(x, rate, m, bandwidth=max(m.spec.bandwidths))
    with torch.inference_mode():
        ref = family.reference_encode(m.model, torch.from_numpy(x[None].astype(np.float32)), n_q)
    got = enc.tokens[0].astype(np.int64)
    assert got.shape == ref.shape
    same = (got[:, :-1] == ref[:, :-1]).mean()
    assert same >= 0.99, same
    assert (got[0, :-1] == ref[0, :-1]).mean() >= 0.99


def test_cli_encode_inspect_decode(tmp_path, signals, test_mimi):
    """The commands as a user types them (one model: the engine is the same for both);
    inspect reads the container without importing torch or transformers."""
    wav = signals.write(tmp_path / "x.wav", signals.chirp(30_001, 44_100, 2), 44_100)
    tpk, out = tmp_path / "x.tpk", tmp_path / "y.wav"
    r = subprocess.run([sys.executable, "-m", "tokpack", "encode", str(wav), "-m", "test_mimi",
                        "-o", str(tpk)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = ("import sys\n"
            "from tokpack.cli import main\n"
            f"sys.argv = ['tokpack', 'inspect', '--json', {str(tpk)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"model_id": "test_mimi"' in r.stdout and r.stdout.splitlines()[-1] == "[]"
    r = subprocess.run([sys.executable, "-m", "tokpack", "decode", str(tpk), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = sf.info(out)
    assert (info.frames, info.samplerate, info.channels) == (30_001, 44_100, 2)
    header = loads(tpk.read_bytes()).header
    assert (header.model_id, header.hop_length, header.codebook_size) == ("test_mimi", 1920, 2048)
    assert header.weights_sha256 == test_mimi.weights_sha256
