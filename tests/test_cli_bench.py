"""tokpack bench: NDJSON/CSV rows with every key, numbers recomputed, thresholds, plot.

Short clips of the corpus (2 s) and the offline test model keep this fast. Scores from
optional packages (STOI, PESQ) are floats with them installed and null without.
"""

import csv
import io
import json
import math

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack import metrics
from tokpack.bench import ROW_KEYS, BenchRow, find_audio, plan_cells
from tokpack.cli import app
from tokpack.cli.bench_cmd import violations
from tokpack.cli.report import show_progress
from tokpack.compare import Metrics, compare_files
from tokpack.errors import ModelError

runner = CliRunner()
CLIPS = ("speech_alsa_voice_48k.wav", "music_gnome_startup3_44k_stereo.wav", "speech_espeak_en_us_22k.wav")
CLIP_SECONDS = 2


@pytest.fixture(scope="module")
def clips(corpus_dir, tmp_path_factory):
    """The first 2 s of three corpus files (48 kHz mono, 44.1 kHz stereo, 22.05 kHz mono)."""
    out = tmp_path_factory.mktemp("clips")
    for name in CLIPS:
        info = sf.info(corpus_dir / "real" / name)
        data, rate = sf.read(corpus_dir / "real" / name, frames=CLIP_SECONDS * info.samplerate, always_2d=True)
        sf.write(out / name, data, rate, subtype=info.subtype)
    return out


@pytest.fixture(scope="module")
def bench_run(clips, test_24khz, tmp_path_factory):
    """One `bench --json --plot` of 3 clips x 2 bandwidths, shared by the tests below; with
    thresholds it meets and a forced progress bar, neither of which may touch stdout."""
    plot = tmp_path_factory.mktemp("plot") / "rd.png" if metrics_plot_available() else None
    args = ["bench", "--json", "--progress", "-m", "test_24khz", "-b", "1.5", "-b", "6", str(clips),
            "--max-kbps", "100", "--min-si-sdr", "-200", "--max-mel-distance", "50"]
    result = runner.invoke(app, args + (["--plot", str(plot)] if plot else []))
    return result, [json.loads(line) for line in result.stdout.splitlines()], plot


def metrics_plot_available():
    from tokpack.plot import has_matplotlib

    return has_matplotlib()


def expected_type(key):
    if key in ("stoi", "pesq_wb"):
        return float if {"stoi": metrics.has_stoi, "pesq_wb": metrics.has_pesq}[key]() else type(None)
    if key in ("schema_version", "n_codebooks", "sample_rate", "channels", "frames", "container_bytes"):
        return int
    return str if key in ("path", "model") else float


def test_three_files_by_two_bandwidths_give_six_complete_objects(bench_run, clips):
    result, objs, _ = bench_run
    assert result.exit_code == 0, result.stderr
    assert len(objs) == 6  # the progress bar went to stderr, if anywhere
    expected_cells = [(str(clips / name), bw) for name in sorted(CLIPS) for bw in (1.5, 6.0)]
    assert [(o["path"], o["bandwidth_kbps"]) for o in objs] == expected_cells
    for obj in objs:
        assert tuple(obj) == ROW_KEYS
        for key, value in obj.items():
            assert type(value) is expected_type(key), (key, value)
        info = sf.info(obj["path"])
        frames, size = info.frames, obj["container_bytes"]
        duration = frames / info.samplerate
        assert obj == {
            **obj,
            "schema_version": 1,
            "model": "test_24khz",
            "n_codebooks": {1.5: 2, 6.0: 8}[obj["bandwidth_kbps"]],
            "sample_rate": info.samplerate,
            "channels": info.channels,
            "frames": frames,
            "duration_s": duration,
            "bitrate_bps": size * 8 / duration,
            "compression_ratio": frames * info.channels * 2 / size,
            "encode_rtf": duration / obj["encode_s"],
            "decode_rtf": duration / obj["decode_s"],
        }
        assert obj["encode_s"] > 0 and obj["decode_s"] > 0
        assert math.isfinite(obj["snr_db"]) and math.isfinite(obj["si_sdr_db"]) and obj["mel_distance"] > 0


def test_a_row_equals_encode_then_decode_then_compare(bench_run, clips, test_24khz, tmp_path):
    """bench's numbers are those of the public pipeline: same container, same scores."""
    import tokpack

    _, objs, _ = bench_run
    src = clips / "speech_espeak_en_us_22k.wav"
    (row,) = [o for o in objs if o["path"] == str(src) and o["bandwidth_kbps"] == 6.0]
    tokpack.encode(src, tmp_path / "x.tpk", model=test_24khz, bandwidth=6)
    tokpack.decode(tmp_path / "x.tpk", tmp_path / "x.wav", model=test_24khz, subtype="FLOAT")
    assert row["container_bytes"] == (tmp_path / "x.tpk").stat().st_size
    scores = compare_files(src, tmp_path / "x.wav").metrics.to_json()
    assert {k: row[k] for k in scores} == scores


def test_plot_is_a_png(bench_run):
    pytest.importorskip("matplotlib")
    result, _, plot = bench_run
    assert result.exit_code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_has_the_json_keys_and_values(bench_run, clips):
    _, objs, _ = bench_run
    src = clips / "speech_espeak_en_us_22k.wav"
    result = runner.invoke(app, ["bench", "--csv", "-m", "test_24khz", "-b", "1.5", str(src)])
    assert result.exit_code == 0, result.stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(header) == ROW_KEYS and len(rows) == 1
    (as_json,) = [o for o in objs if o["path"] == str(src) and o["bandwidth_kbps"] == 1.5]
    timing = {"encode_s", "decode_s", "encode_rtf", "decode_rtf"}
    for key, cell in zip(header, rows[0]):
        if key not in timing:
            assert cell == ("" if as_json[key] is None else str(as_json[key])), key


def test_violated_thresholds_exit_1_naming_them_under_the_table(bench_run, clips):
    _, objs, _ = bench_run
    src = clips / "speech_alsa_voice_48k.wav"
    (row,) = [o for o in objs if o["path"] == str(src) and o["bandwidth_kbps"] == 6.0]
    result = runner.invoke(app, ["bench", "-m", "test_24khz", "-b", "6", str(src),
                                 "--max-kbps", "1", "--min-si-sdr", "90", "--max-mel-distance", "0.001"])
    assert result.exit_code == 1
    heading, line = result.stdout.splitlines()
    assert heading.split() == ["file", "model", "kbps", "bitrate", "ratio", "SNR", "SI-SDR", "mel", "STOI", "PESQ",
                               "enc", "xRT", "dec", "xRT"]
    assert line.split()[:6] == [str(src), "test_24khz", "6", f"{row['bitrate_bps'] / 1000:.2f}",
                                f"{row['compression_ratio']:.1f}x", f"{row['snr_db']:.2f}"]
    prefix = f"tokpack: {src}: test_24khz at 6 kbps: "
    assert result.stderr.splitlines() == [
        prefix + f"bitrate {row['bitrate_bps'] / 1000:.3f} kbps exceeds --max-kbps 1",
        prefix + f"SI-SDR {row['si_sdr_db']:.2f} dB is below --min-si-sdr 90",
        prefix + f"mel distance {row['mel_distance']:.4f} exceeds --max-mel-distance 0.001",
    ]


def row(bitrate_bps=6000.0, si_sdr=10.0, mel=0.5):
    return BenchRow(1, "a.wav", "m", 6.0, 8, 24000, 1, 24000, 1.0, 750, bitrate_bps, 64.0, 0.1, 0.1, 10.0, 10.0,
                    Metrics(12.0, si_sdr, mel, None, None))


def test_threshold_edges():
    bounds = {"max_kbps": 6, "min_si_sdr": 10, "max_mel_distance": 0.5}
    assert violations(row(), **bounds) == []  # equal to a bound is within it
    assert violations(row(si_sdr=math.inf), **bounds) == []
    assert violations(row(si_sdr=-math.inf), **bounds) == ["SI-SDR -inf dB is below --min-si-sdr 10"]
    assert violations(row(bitrate_bps=None), **bounds) == []  # empty input: no bitrate
    assert violations(row(6001.0, 9.99, 0.51), max_kbps=None, min_si_sdr=None, max_mel_distance=None) == []


def test_unreadable_input_is_an_object_and_the_rest_still_run(test_24khz, tmp_path, signals):
    good = signals.write(tmp_path / "a.wav", signals.chirp(2400, 24_000), 24_000)
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"not audio")
    result = runner.invoke(app, ["bench", "--json", "-m", "test_24khz", "-b", "1.5", str(bad), str(good)])
    assert result.exit_code == 1
    err, ok = [json.loads(line) for line in result.stdout.splitlines()]
    assert err == {"schema_version": 1, "path": str(bad), "model": None, "bandwidth_kbps": None,
                   "error": err["error"]}
    assert err["error"].startswith("cannot read audio: ")
    assert ok["path"] == str(good)
    assert result.stderr == f"tokpack: {bad}: {err['error']}\n"


def test_usage_errors(tmp_path):
    assert runner.invoke(app, ["bench", "--json", "--csv", str(tmp_path)]).exit_code == 2
    result = runner.invoke(app, ["bench", str(tmp_path)])  # an empty directory
    assert result.exit_code == 2 and result.stderr == "tokpack: no audio files found in the inputs\n"


def test_plot_refuses_to_overwrite_and_needs_matplotlib(tmp_path, monkeypatch):
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros(100), 24_000)
    plot = tmp_path / "rd.png"
    plot.write_bytes(b"precious")
    import tokpack.plot

    monkeypatch.setattr(tokpack.plot, "has_matplotlib", lambda: True)
    result = runner.invoke(app, ["bench", "-m", "test_24khz", str(src), "--plot", str(plot)])
    assert result.exit_code == 1 and result.stderr == f"tokpack: {plot}: already exists (use -f to overwrite)\n"
    assert plot.read_bytes() == b"precious"
    monkeypatch.setattr(tokpack.plot, "has_matplotlib", lambda: False)
    result = runner.invoke(app, ["bench", "-m", "test_24khz", str(src), "--plot", str(tmp_path / "new.png")])
    assert result.exit_code == 1
    assert result.stderr == f"tokpack: {tmp_path / 'new.png'}: --plot needs matplotlib: pip install 'tokpack[plot]'\n"


def test_directories_are_walked_for_audio(tmp_path):
    for rel in ("b/x.flac", "a/y.WAV", "a/notes.txt", "a/.hidden.wav", ".git/z.wav", "c.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert find_audio([str(tmp_path), "-", "given.txt"]) == [
        str(tmp_path / "a" / "y.WAV"), str(tmp_path / "b" / "x.flac"), str(tmp_path / "c.wav"), "-", "given.txt",
    ]


def test_cells_per_model():
    cells, skipped = plan_cells(["test_24khz", "test_48khz"], [1.5, 6])
    assert cells == [("test_24khz", 1.5), ("test_24khz", 6.0), ("test_48khz", 6.0)]
    assert skipped == [("test_48khz", 1.5)]
    assert plan_cells(["test_48khz"], None)[0] == [("test_48khz", b) for b in (3.0, 6.0, 12.0, 24.0)]
    with pytest.raises(ModelError, match="model test_48khz has none of the bandwidths asked for"):
        plan_cells(["test_48khz"], [1.5])


def test_progress_only_on_a_terminal_unless_asked():
    assert show_progress(None, quiet=False, stderr_is_tty=True) is True
    assert show_progress(None, quiet=False, stderr_is_tty=False) is False
    assert show_progress(None, quiet=True, stderr_is_tty=True) is False
    assert show_progress(True, quiet=False, stderr_is_tty=False) is True
    assert show_progress(False, quiet=False, stderr_is_tty=True) is False
