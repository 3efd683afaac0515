"""tokpack compare and tokpack.metrics: exact JSON, hand-computed values, alignment rules.

STOI and PESQ come from optional packages: tests that need them use importorskip; the
others pass with or without them.
"""

import json
import math

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack import metrics
from tokpack.cli import app
from tokpack.compare import align, compare_files, measure

runner = CliRunner()


def compare_json(*args):
    result = runner.invoke(app, ["compare", "--json", *map(str, args)])
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def optional(name):
    """What a key holding an optional package's score must be: a float with it, else None."""
    return float if {"stoi": metrics.has_stoi, "pesq_wb": metrics.has_pesq}[name]() else type(None)


def speechlike(signals, frames, rate):
    """A chirp with a 4 Hz envelope: enough structure for STOI and PESQ to score."""
    x = signals.chirp(frames, rate, f0=150, f1=3000)[:, 0].astype(np.float64)
    return x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * np.arange(frames) / rate))


def test_white_noise_at_exactly_20_db(tmp_path, signals):
    rate, n = 16_000, 32_000
    ref = speechlike(signals, n, rate)
    noise = np.random.default_rng(3).standard_normal(n)
    noise *= math.sqrt(np.sum(ref**2) / np.sum(noise**2) / 100.0)  # energy ratio 10^(20/10)
    signals.write(tmp_path / "ref.wav", ref[:, None], rate)
    signals.write(tmp_path / "deg.wav", (ref + noise)[:, None], rate)
    # by hand, on the float32 samples the files hold (Le Roux et al. 2019, zero-mean)
    r = sf.read(tmp_path / "ref.wav", dtype="float32")[0].astype(np.float64)
    d = sf.read(tmp_path / "deg.wav", dtype="float32")[0].astype(np.float64)
    r0, d0 = r - r.mean(), d - d.mean()
    target = (d0 @ r0) / (r0 @ r0) * r0
    hand_si_sdr = 10 * math.log10((target @ target) / ((d0 - target) @ (d0 - target)))

    result, (obj,) = compare_json(tmp_path / "ref.wav", tmp_path / "deg.wav")
    assert result.exit_code == 0, result.stderr
    assert obj == {
        "schema_version": 1,
        "ref_path": str(tmp_path / "ref.wav"),
        "deg_path": str(tmp_path / "deg.wav"),
        "sample_rate": 16000,
        "channels": 1,
        "ref_sample_rate": 16000,
        "ref_channels": 1,
        "ref_frames": 32000,
        "deg_sample_rate": 16000,
        "deg_channels": 1,
        "deg_frames": 32000,
        "compared_frames": 32000,
        "duration_s": 2.0,
        "snr_db": obj["snr_db"],
        "si_sdr_db": obj["si_sdr_db"],
        "mel_distance": obj["mel_distance"],
        "stoi": obj["stoi"],
        "pesq_wb": obj["pesq_wb"],
    }
    assert abs(obj["snr_db"] - 20.0) <= 0.01
    assert abs(obj["si_sdr_db"] - hand_si_sdr) <= 0.05
    assert obj["mel_distance"] > 0.1  # white noise fills the quiet bands
    assert isinstance(obj["stoi"], optional("stoi")) and isinstance(obj["pesq_wb"], optional("pesq_wb"))
    assert result.stderr == ""


def test_identical_files_give_null_ratios_not_a_crash(tmp_path, signals):
    path = signals.write(tmp_path / "a.wav", speechlike(signals, 24_000, 16_000)[:, None], 16_000)
    result, (obj,) = compare_json(path, path)
    assert result.exit_code == 0
    assert obj["snr_db"] is None and obj["si_sdr_db"] is None  # +inf: no error at all
    assert obj["mel_distance"] == 0.0
    human = runner.invoke(app, ["compare", str(path), str(path)])
    assert human.exit_code == 0
    assert "  SNR          inf dB\n  SI-SDR       inf dB\n  mel distance 0.0000\n" in human.stdout


def test_silent_reference_is_minus_infinity(tmp_path, signals):
    silent = signals.write(tmp_path / "silent.wav", np.zeros((8000, 1), np.float32), 16_000)
    loud = signals.write(tmp_path / "loud.wav", signals.sine(8000, 16_000), 16_000)
    result, (obj,) = compare_json(silent, loud)
    assert result.exit_code == 0
    assert obj["snr_db"] is None and obj["si_sdr_db"] is None
    assert obj["stoi"] is None and obj["pesq_wb"] is None  # nothing to score against
    human = runner.invoke(app, ["compare", str(silent), str(loud)]).stdout
    assert "  SNR          -inf dB\n  SI-SDR       -inf dB\n" in human


def test_alignment_rate_channels_and_length(tmp_path, signals):
    ref = np.repeat(signals.sine(24_000, 24_000), 2, axis=1)  # 1 s stereo at 24 kHz
    deg = signals.sine(52_800, 48_000)  # 1.1 s mono at 48 kHz: the same tone
    signals.write(tmp_path / "ref.wav", ref, 24_000)
    signals.write(tmp_path / "deg.wav", deg, 48_000)
    result, (obj,) = compare_json(tmp_path / "ref.wav", tmp_path / "deg.wav")
    assert result.exit_code == 0, result.stderr
    fields = {k: obj[k] for k in ("sample_rate", "channels", "ref_sample_rate", "ref_channels", "ref_frames",
                                  "deg_sample_rate", "deg_channels", "deg_frames", "compared_frames", "duration_s")}
    assert fields == {"sample_rate": 24000, "channels": 1, "ref_sample_rate": 24000, "ref_channels": 2,
                      "ref_frames": 24000, "deg_sample_rate": 48000, "deg_channels": 1, "deg_frames": 52800,
                      "compared_frames": 24000, "duration_s": 1.0}
    assert obj["snr_db"] > 40  # the pinned resampler keeps a 440 Hz tone intact


def test_align_keeps_channels_when_counts_match(signals):
    a, b = align(signals.sine(100, channels=2), 24_000, signals.sine(90, channels=2), 24_000)
    assert a.shape == b.shape == (90, 2)


def test_errors_are_objects_and_exit_1(tmp_path, signals):
    good = signals.write(tmp_path / "a.wav", signals.sine(1000), 24_000)
    missing = tmp_path / "missing.wav"
    result, (obj,) = compare_json(good, missing)
    assert result.exit_code == 1
    assert obj == {"schema_version": 1, "path": str(missing), "error": "cannot open: No such file or directory"}
    assert result.stderr == f"tokpack: {missing}: cannot open: No such file or directory\n"
    notaudio = tmp_path / "x.wav"
    notaudio.write_bytes(b"not audio at all")
    result = runner.invoke(app, ["compare", str(notaudio), str(good)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"tokpack: {notaudio}: cannot read audio: ")


def test_stdin_once(tmp_path, signals):
    data = signals.wav_bytes(signals.sine(4000), 24_000).getvalue()
    path = signals.write(tmp_path / "a.wav", signals.sine(4000), 24_000)
    result = runner.invoke(app, ["compare", "--json", "-", str(path)], input=data)
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    assert obj["ref_path"] == "<stdin>" and obj["snr_db"] is None
    result = runner.invoke(app, ["compare", "-", "-"], input=data)
    assert result.exit_code == 2
    assert result.stderr == "tokpack: stdin ('-') can be read only once\n"


def test_optional_scores_are_null_without_their_packages(monkeypatch, signals):
    monkeypatch.setattr(metrics, "has_stoi", lambda: False)
    monkeypatch.setattr(metrics, "has_pesq", lambda: False)
    x = signals.sine(16_000, 16_000)
    m = measure(x, x * 0.5, 16_000)
    assert (m.stoi, m.pesq_wb) == (None, None)
    assert m.snr_db == pytest.approx(20 * math.log10(2))  # error = half the signal: 6.02 dB
    assert m.si_sdr_db == math.inf  # an exact multiple: no distortion up to scale


# ---- the metrics themselves ----------------------------------------------------------


def test_si_sdr_is_scale_invariant_and_snr_is_not():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4000, 1))
    deg = ref + 0.1 * rng.standard_normal((4000, 1))
    assert metrics.si_sdr_db(ref, 3 * deg) == pytest.approx(metrics.si_sdr_db(ref, deg), abs=1e-9)
    assert metrics.snr_db(ref, 3 * deg) < metrics.snr_db(ref, deg)
    assert metrics.snr_db(ref, deg) == pytest.approx(20.0, abs=0.2)


def test_log_mel_power_does_not_depend_on_the_rate():
    """Power is normalised by (sum of the window)^2, and the triangles sum to 1 across the
    band, so a tone's mel power adds up to A^2/4 x 1.5 (Hann's noise bandwidth) at any rate."""
    for rate in (16_000, 24_000, 48_000):
        t = np.arange(rate) / rate
        mel = metrics.log_mel(0.5 * np.sin(2 * np.pi * 1000 * t), rate)
        assert (10.0**mel).sum(axis=1).mean() == pytest.approx(0.25 * 0.25 * 1.5, rel=0.05), rate
    assert metrics.mel_distance(np.zeros((100, 1)), np.zeros((100, 1)), 8000) == 0.0
    assert metrics.mel_distance(np.zeros((0, 2)), np.zeros((0, 2)), 8000) == 0.0


def test_stoi_scores_identical_speechlike_signals_as_one(signals):
    pytest.importorskip("pystoi")
    x = speechlike(signals, 32_000, 16_000)
    assert metrics.stoi(x, x, 16_000) == pytest.approx(1.0, abs=1e-6)
    assert metrics.stoi(x[:1000], x[:1000], 16_000) is None  # under 30 frames: no score


def test_pesq_scores_identical_signals_near_the_top(signals):
    pytest.importorskip("pesq")
    x = speechlike(signals, 48_000, 16_000)
    noisy = x + 0.05 * np.random.default_rng(1).standard_normal(len(x))
    top, worse = metrics.pesq_wb(x, x), metrics.pesq_wb(x, noisy)
    assert top > 4.0 and worse < top
    assert metrics.pesq_wb(np.zeros(16_000), x) is None


def test_compare_files_accepts_file_objects(signals):
    a = signals.wav_bytes(signals.sine(2400), 24_000)
    b = signals.wav_bytes(signals.sine(2400), 24_000)
    r = compare_files(a, b, ref_name="a", deg_name="b")
    assert (r.ref_path, r.deg_path, r.compared_frames, r.to_json()["snr_db"]) == ("a", "b", 2400, None)
