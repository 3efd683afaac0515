"""encode --format ecdc and decode of .ecdc files through the CLI, on the test models."""

from __future__ import annotations

import io
import json
import struct
import urllib.error

import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tokpack.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def stereo(tmp_path_factory, signals):
    """0.7 s of chirp at 44.1 kHz stereo, PCM_16."""
    d = tmp_path_factory.mktemp("ecdc")
    return signals.write(d / "in.wav", signals.chirp(30_870, rate=44_100, channels=2), 44_100,
                         subtype="PCM_16")


def test_encode_then_decode(stereo, tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(stereo.read_bytes())
    result = invoke("encode", src, "--format", "ecdc", "-m", "test_24khz")
    assert result.exit_code == 0, result.stderr
    ecdc = tmp_path / "a.ecdc"
    assert result.stderr.endswith(f"kbps, {ecdc})\n")
    assert ecdc.read_bytes()[:4] == b"ECDC"
    result = invoke("decode", ecdc)
    assert result.exit_code == 0, result.stderr
    info = sf.info(tmp_path / "a.out.wav")  # the model's rate and channels: .ecdc keeps no more
    assert (info.samplerate, info.channels, info.frames) == (24_000, 1, 16_800)
    result = invoke("decode", ecdc, "-o", tmp_path / "b.wav", "--sample-rate", "16000", "--json")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["status"], row["duration_s"], row["bytes_in"]) == ("ok", 0.7, ecdc.stat().st_size)
    assert sf.info(tmp_path / "b.wav").frames == 11_200


def test_pipes_and_verify(stereo, tmp_path):
    ecdc = tmp_path / "x.ecdc"
    assert invoke("encode", stereo, "--format", "ecdc", "-m", "test_48khz", "-o", ecdc, "-q").exit_code == 0
    piped = invoke("encode", "-", "-c", "--format", "ecdc", "-m", "test_48khz", "-q",
                   input=stereo.read_bytes())
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout_bytes == ecdc.read_bytes()
    wav = tmp_path / "y.wav"
    assert invoke("decode", ecdc, "-o", wav, "-q").exit_code == 0
    out = invoke("decode", "-", "-c", "-q", input=ecdc.read_bytes())
    assert out.exit_code == 0, out.stderr
    assert out.stdout_bytes == wav.read_bytes()
    result = invoke("decode", "-t", ecdc)
    assert result.exit_code == 0 and result.stderr.startswith(f"{ecdc} : OK (")
    cut = tmp_path / "cut.ecdc"
    cut.write_bytes(ecdc.read_bytes()[:-3])
    result = invoke("decode", "-t", cut)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"tokpack: {cut}: offset ")
    assert "codes: segment 0: data ends after" in result.stderr


def test_options_ecdc_cannot_take(stereo, tmp_path):
    result = invoke("encode", stereo, "--format", "ecdc", "--channels", "split", "-m", "test_24khz",
                    "-o", tmp_path / "x.ecdc")
    assert result.exit_code == 2
    assert ".ecdc holds one token stream: --channels split needs .tpk" in result.stderr
    ecdc = tmp_path / "x.ecdc"
    assert invoke("encode", stereo, "--format", "ecdc", "-m", "test_24khz", "-o", ecdc, "-q").exit_code == 0
    result = invoke("decode", ecdc, "--salvage", "-o", tmp_path / "y.wav")
    assert result.exit_code == 1
    assert result.stderr == (f"tokpack: {ecdc}: --salvage reads .tpk containers; an .ecdc file has "
                             "no checksums to tell what is intact\n")


def ecdc_header(meta: dict) -> bytes:
    data = json.dumps(meta).encode()
    return struct.pack("!4sBI", b"ECDC", 0, len(data)) + data


@pytest.mark.parametrize("data,message", [
    (b"ECDX\x00\x00\x00\x00\x02{}", "offset 0, magic: not an .ecdc file (starts with b'ECDX', expected b'ECDC')"),
    (b"ECDC\x00\x00\x00\x00\x05{\"m\":", "offset 9, metadata: not JSON: Expecting value: line 1 column 6 (char 5)"),
    (ecdc_header({"m": "test_24khz", "al": 960, "nc": 2, "lm": False}) + bytes(6),
     "offset 67, codes: segment 0: data ends after 4 of 6 codes"),
    (b"", "offset 0, header: the 9-byte .ecdc header: data ends after 0 of 9 bytes"),
])
def test_malformed_files_fail_in_one_line(tmp_path, data, message):
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(data)
    result = invoke("decode", bad, "-o", tmp_path / "out.wav")
    assert result.exit_code == 1
    assert result.stderr == f"tokpack: {bad}: {message}\n"
    assert not (tmp_path / "out.wav").exists()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache; downloads fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TOKPACK_LM_WEIGHTS", raising=False)

    def fail(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_lm_coded_file_without_its_lm(tmp_path, offline_hub, test_24khz):
    """The model's weights given (a test model's, same architecture), its LM absent."""
    x = tmp_path / "x.ecdc"
    x.write_bytes(ecdc_header({"m": "encodec_24khz", "al": 640, "nc": 2, "lm": True}) + bytes(8))
    weights = test_24khz.weights_path
    result = invoke("decode", x, "--weights", weights)
    assert result.exit_code == 1
    assert result.stderr == (
        f"tokpack: {x}: LM weights for model encodec_24khz not found: encodec_lm_24khz-1608e3c0.th "
        "is not cached and could not be downloaded from "
        "https://dl.fbaipublicfiles.com/encodec/v0/encodec_lm_24khz-1608e3c0.th "
        f"(Name or service not known); put the file at {offline_hub / 'encodec_lm_24khz-1608e3c0.th'}, "
        "or pass --lm-weights PATH, or set TOKPACK_LM_WEIGHTS=PATH\n"
    )
    result = invoke("decode", x, "--weights", weights, "--lm-weights", tmp_path / "nope.th")
    assert (result.exit_code, result.stderr) == (  # checked before any file
        2, f"tokpack: --lm-weights {tmp_path / 'nope.th'}: no such file\n")


def test_lm_coded_file_with_its_lm(tmp_path, test_24khz, signals):
    from tokpack.codec.engine import encode
    from tokpack.codecs.encodec.lm import load_lm

    x = tmp_path / "x.ecdc"
    encode(signals.wav_bytes(signals.chirp(4000), 24_000), x, model=test_24khz, container="ecdc",
           coder="encodec-lm")
    lm_file = tmp_path / "lm.th"
    lm_file.write_bytes(load_lm("test_24khz").weights_path.read_bytes())
    result = invoke("decode", x, "--lm-weights", lm_file, "-o", tmp_path / "y.wav")
    assert result.exit_code == 0, result.stderr
    assert sf.info(tmp_path / "y.wav").frames == 4000
    assert invoke("decode", "-t", x, "--lm-weights", lm_file).exit_code == 0


def test_official_name_decoded_with_explicit_weights(stereo, tmp_path, test_24khz, offline_hub):
    """An .ecdc names encodec's model and records no weights: --weights decodes it with
    another checkpoint of that architecture (here the test model's)."""
    ecdc = tmp_path / "x.ecdc"
    weights = test_24khz.weights_path
    result = invoke("encode", stereo, "--format", "ecdc", "-m", "encodec_24khz", "--weights", weights, "-o", ecdc)
    assert result.exit_code == 0, result.stderr
    assert b'"m": "encodec_24khz"' in ecdc.read_bytes()[:80]
    assert invoke("decode", ecdc, "-o", tmp_path / "no.wav").exit_code == 1  # official weights absent
    result = invoke("decode", ecdc, "--weights", weights, "-o", tmp_path / "y.wav")
    assert result.exit_code == 0, result.stderr


def test_directories_hold_both_kinds(stereo, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    assert invoke("encode", stereo, "-m", "test_24khz", "-o", d / "a.tpk", "-q").exit_code == 0
    assert invoke("encode", stereo, "--format", "ecdc", "-m", "test_24khz", "-o", d / "b.ecdc", "-q").exit_code == 0
    result = invoke("decode", "-r", d, "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.endswith("tokpack: 2 ok, 0 skipped, 0 failed\n")
    a, b = (sf.read(io.BytesIO((tmp_path / "out" / n).read_bytes()))[0]
            for n in ("a.out.wav", "b.out.wav"))
    assert a.shape == (30_870, 2) and b.shape == (16_800,)
