"""tokpack inspect: exact JSON, numbers recomputed independently, no torch."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.formats import Header, dumps, read_tokens

runner = CliRunner()
DATA = Path(__file__).parent / "data"


def make_container(tmp_path, tokens, source_frames=48_000, rate=24_000):
    header = Header(
        model_id="test_24khz", weights_sha256=bytes(range(32)), model_sample_rate=24_000, hop_length=320,
        codebook_size=1024, n_codebooks=tokens.shape[0], model_channels=1, source_sample_rate=rate,
        source_channels=1, source_frames=source_frames, model_samples=tokens.shape[1] * 320,
    )
    path = tmp_path / "x.tpk"
    path.write_bytes(dumps(header, tokens))
    return path


def test_json_numbers_match_an_independent_recomputation(tmp_path):
    rng = np.random.default_rng(7)
    tokens = np.stack([rng.zipf(1.5, 150) % 1024, rng.integers(0, 1024, 150), np.full(150, 3)]).astype(np.uint16)
    path = make_container(tmp_path, tokens, source_frames=48_000)
    result = runner.invoke(app, ["inspect", "--json", str(path)])
    assert result.exit_code == 0, result.stderr
    (obj,) = [json.loads(line) for line in result.stdout.splitlines()]
    size = path.stat().st_size
    assert obj["file_bytes"] == size
    assert obj["duration_s"] == 2.0
    assert abs(obj["bitrate_bps"] - size * 8 / 2.0) <= 1e-3 * obj["bitrate_bps"]
    assert obj["compression_ratio"] == pytest.approx(48_000 * 2 / size)
    assert obj["nominal_bitrate_bps"] == 3 * 10 * 75
    read = read_tokens(path)
    for k, cb in enumerate(obj["codebooks"]):
        _, counts = np.unique(read[k], return_counts=True)
        p = counts / counts.sum()
        assert cb["entropy_bits"] == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-9)
        assert cb["distinct_codes"] == len(counts)
        assert cb["utilisation"] == len(counts) / 1024
    assert obj["codebooks"][2]["entropy_bits"] == 0.0
    assert obj["codebooks"][2]["coder_gain"] > 0.5  # a constant codebook codes far below 10 bits


def test_json_of_a_golden_file_is_exact():
    result = runner.invoke(app, ["inspect", "--json", str(DATA / "tiny_24khz.tpk")])
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    assert obj == {
        "schema_version": 1,
        "path": str(DATA / "tiny_24khz.tpk"),
        "format": "tpk",
        "tokens_only": False,
        "live": False,
        "frames_per_chunk": 4,
        "file_bytes": 229,
        "model_id": "test_24khz",
        "weights_sha256": obj["weights_sha256"],
        "prior_sha256": None,  # a 1.0 file
        "model_sample_rate": 24000,
        "model_channels": 1,
        "frame_rate_hz": 75.0,
        "n_codebooks": 2,
        "codebook_size": 1024,
        "bits_per_code": 10,
        "n_streams": 1,
        "channel_mode": "as_is",
        "nominal_bitrate_bps": 1500.0,
        "source_sample_rate": 24000,
        "source_channels": 1,
        "source_frames": 1600,
        "duration_s": 1600 / 24000,
        "total_frames": 5,
        "n_chunks": 2,
        "bitrate_bps": 229 * 8 / (1600 / 24000),
        "compression_ratio": 3200 / 229,
        "token_bytes": 13,
        "overhead_bytes": 216,
        "coders": {"pack": 2, "pack_zstd": 0, "planes_zstd": 0, "ctx": 0, "ctx_carry": 0},
        "ctx_keyframe": 1,
        "codebooks": obj["codebooks"],
    }
    assert len(obj["weights_sha256"]) == 64
    assert [cb["index"] for cb in obj["codebooks"]] == [0, 1]


def test_empty_container_has_null_bitrate():
    obj = json.loads(runner.invoke(app, ["inspect", "--json", str(DATA / "empty.tpk")]).stdout)
    assert obj["duration_s"] == 0.0 and obj["bitrate_bps"] is None


def test_errors_are_objects_and_exit_1(tmp_path):
    bad = tmp_path / "bad.tpk"
    bad.write_bytes(b"XYZW" + bytes(200))
    result = runner.invoke(app, ["inspect", "--json", str(DATA / "tiny_24khz.tpk"), str(bad)])
    assert result.exit_code == 1
    good, err = [json.loads(line) for line in result.stdout.splitlines()]
    assert good["model_id"] == "test_24khz"
    assert err["path"] == str(bad) and err["schema_version"] == 1
    assert err["error"].startswith("offset 0, magic: not a tokpack container")
    assert result.stderr.startswith(f"tokpack: {bad}: offset 0, magic")


def test_max_kbps_threshold(tmp_path):
    path = DATA / "tiny_24khz.tpk"  # 27.48 kbps
    assert runner.invoke(app, ["inspect", "--max-kbps", "30", str(path)]).exit_code == 0
    result = runner.invoke(app, ["inspect", "--max-kbps", "10", str(path)])
    assert result.exit_code == 1
    assert "bitrate 27.480 kbps exceeds --max-kbps 10" in result.stderr


def test_plain_text_view():
    result = runner.invoke(app, ["inspect", str(DATA / "tiny_24khz.tpk")])
    assert result.exit_code == 0
    assert "  model        test_24khz (weights " in result.stdout
    assert "  bitrate      27.480 kbps actual, 1.5 kbps nominal" in result.stdout


def test_inspect_does_not_import_torch_or_the_audio_engine():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tokpack.cli import app\n"
        f"r = CliRunner().invoke(app, ['inspect', '--json', {str(DATA / 'tiny_24khz.tpk')!r}])\n"
        "assert r.exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'transformers', 'soundfile', 'tokpack.codec.engine')\n"
        "             if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ctx_containers_show_their_prior_and_need_it(tmp_path):
    path = DATA / "ctx_prior.tpk"
    result = runner.invoke(app, ["inspect", "--json", str(path)])
    assert result.exit_code == 1 and "PriorNotFound" not in result.stderr
    assert "not here: pass its .tpp file with --prior" in result.stderr
    result = runner.invoke(app, ["inspect", "--json", "--prior", str(DATA / "golden.tpp"), str(path)])
    assert result.exit_code == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["coders"]["ctx"] == 2 and obj["prior_sha256"] == hashlib.sha256(
        (DATA / "golden.tpp").read_bytes()).hexdigest()
    uniform = json.loads(runner.invoke(app, ["inspect", "--json", str(DATA / "ctx_uniform.tpk")]).stdout)
    assert uniform["prior_sha256"] == "0" * 64
