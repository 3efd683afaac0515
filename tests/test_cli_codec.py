"""encode/decode through the CLI on the offline test models."""

import re

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def speechlike(tmp_path_factory, signals):
    """2.5 s of chirp + noise at 44.1 kHz stereo, PCM_16."""
    d = tmp_path_factory.mktemp("cli")
    x = 0.5 * signals.chirp(110_250, rate=44_100, channels=2) + signals.noise(110_250, channels=2, amp=0.05)
    return signals.write(d / "in.wav", x, 44_100, subtype="PCM_16")


def test_encode_then_decode_restores_rate_channels_and_length(speechlike, tmp_path):
    tpk, wav = tmp_path / "x.tpk", tmp_path / "y.wav"
    result = runner.invoke(app, ["encode", str(speechlike), "-m", "test_24khz", "-o", str(tpk)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert re.fullmatch(
        rf"{re.escape(str(speechlike))} : \d+\.\d\d% \(\d+\.\d KiB => \d+\.\d KiB, \d+\.\d\d kbps, {re.escape(str(tpk))}\)\n",
        result.stderr,
    ), result.stderr
    result = runner.invoke(app, ["decode", str(tpk), "-o", str(wav)])
    assert result.exit_code == 0, result.stderr
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44_100, 2, 110_250, "PCM_16")


def test_default_output_name_and_no_clobber(speechlike, tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(speechlike.read_bytes())
    assert runner.invoke(app, ["encode", str(src), "-m", "test_24khz", "-q"]).exit_code == 0
    tpk = tmp_path / "a.tpk"
    first = tpk.read_bytes()
    result = runner.invoke(app, ["encode", str(src), "-m", "test_24khz"])
    assert result.exit_code == 1
    assert result.stderr == f"tokpack: {src}: {tpk} already exists (use -f to overwrite)\n"
    tpk.write_bytes(b"stale")
    assert runner.invoke(app, ["encode", str(src), "-m", "test_24khz", "-f", "-q"]).exit_code == 0
    assert tpk.read_bytes() == first  # deterministic
    # decoding a.tpk writes a.out.wav, never a.wav: the source itself
    result = runner.invoke(app, ["decode", str(tpk), "-q"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a.out.wav").exists() and src.read_bytes() == speechlike.read_bytes()


def test_pipes_give_the_same_bytes_as_files(speechlike, tmp_path):
    tpk = tmp_path / "x.tpk"
    assert runner.invoke(app, ["encode", str(speechlike), "-m", "test_24khz", "-o", str(tpk), "-q"]).exit_code == 0
    piped = runner.invoke(app, ["encode", "-", "-c", "-m", "test_24khz", "-q"], input=speechlike.read_bytes())
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes == tpk.read_bytes()
    wav = tmp_path / "y.wav"
    assert runner.invoke(app, ["decode", str(tpk), "-o", str(wav), "-q"]).exit_code == 0
    out = runner.invoke(app, ["decode", "-", "-o", "-", "-q"], input=tpk.read_bytes())
    assert out.exit_code == 0, out.stderr
    assert out.stdout_bytes == wav.read_bytes()


def test_decode_options(speechlike, tmp_path):
    tpk = tmp_path / "x.tpk"
    assert runner.invoke(app, ["encode", str(speechlike), "-m", "test_48khz", "-b", "12", "-o", str(tpk), "-q"]).exit_code == 0
    flac = tmp_path / "y.flac"
    r = runner.invoke(app, ["decode", str(tpk), "-o", str(flac), "--sample-rate", "model", "--subtype", "PCM_24"])
    assert r.exit_code == 0, r.stderr
    info = sf.info(flac)
    assert (info.format, info.samplerate, info.subtype, info.frames) == ("FLAC", 48_000, "PCM_24", 120_000)
    r = runner.invoke(app, ["decode", str(tpk), "-o", str(tmp_path / "z.wav"), "--sample-rate", "16000", "--subtype", "FLOAT"])
    assert r.exit_code == 0
    assert sf.info(tmp_path / "z.wav").frames == 40_000


def test_clipping_is_reported_on_stderr(tmp_path, speechlike, monkeypatch):
    # The test models' output is quiet, so the CLI's reporting is checked on a decoder
    # result that says it clipped (the library's clip counting is tested in test_codec_*).
    from dataclasses import replace

    from tokpack.codec import engine

    tpk = tmp_path / "x.tpk"
    assert runner.invoke(app, ["encode", str(speechlike), "-m", "test_24khz", "-o", str(tpk), "-q"]).exit_code == 0
    real = engine.decode
    monkeypatch.setattr(engine, "decode", lambda *a, **k: replace(real(*a, **k), clipped_samples=17))
    r = runner.invoke(app, ["decode", str(tpk), "-o", str(tmp_path / "a.wav")])
    assert r.exit_code == 0
    assert r.stderr.splitlines()[0] == (
        f"tokpack: {tmp_path / 'a.wav'}: warning: 17 samples clipped to full scale; use --subtype FLOAT to keep them"
    )
    r = runner.invoke(app, ["decode", str(tpk), "-o", str(tmp_path / "b.wav"), "-q"])
    assert r.stderr == ""


def test_errors_are_one_line(tmp_path, signals):
    bad = tmp_path / "nan.wav"
    x = signals.sine(4800)
    x[100] = np.nan
    signals.write(bad, x, 24_000)
    r = runner.invoke(app, ["encode", str(bad), "-m", "test_24khz"])
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"tokpack: {bad}: ")
    assert not (tmp_path / "nan.tpk").exists()
    text = tmp_path / "t.wav"
    text.write_text("hello")
    r = runner.invoke(app, ["encode", str(text), "-m", "test_24khz"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = runner.invoke(app, ["encode", str(text), "-m", "no_such_model"])
    assert r.exit_code == 2 and "no_such_model" in r.stderr  # usage errors: before any file
    r = runner.invoke(app, ["encode", str(text), "-m", "test_24khz", "-b", "7"])
    assert r.exit_code == 2 and "7" in r.stderr


def test_official_model_offline_names_the_checkpoint(tmp_path, signals, monkeypatch):
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    src = signals.write(tmp_path / "x.wav", signals.sine(2400), 24_000)
    r = runner.invoke(app, ["encode", str(src)])
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1
    line = r.stderr
    assert "encodec_24khz-d7cc33bc.th" in line
    assert "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th" in line
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th") in line
    assert "--weights PATH" in line and "TOKPACK_WEIGHTS" in line
    assert not (tmp_path / "x.tpk").exists()
