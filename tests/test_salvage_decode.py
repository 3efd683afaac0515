"""decode of damaged containers: strict decode names the chunk; --salvage writes what is intact."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.codec.engine import decode, encode_array, write_blocks
from tokpack.errors import ChecksumMismatch, FormatError
from tokpack.formats import ContainerReader, ContainerWriter
from tokpack.formats.chunk import chunk_sample
from tokpack.formats.spec import CHUNK_HEAD_SIZE

runner = CliRunner()

# model -> (rate, channels, seconds, frames per chunk, samples after a gap where the decoder
# has not settled: the causal decoder restarts its state; a segment is not cross-faded
# with the lost one before it)
CASES = {
    "test_24khz": (24_000, 1, 1.2, 25, 2400),  # chunks of 25 frames: 25, 25, 25, 15
    "test_48khz": (48_000, 2, 2.5, 150, 960),  # one 1 s segment per chunk: 3 chunks
}


@dataclasses.dataclass
class Made:
    loaded: object
    data: bytes
    offsets: list[int]  # of each TOKENS chunk
    starts: list[int]  # first model-rate sample of each chunk, and the chunk after the last
    audio: np.ndarray  # the undamaged decode, float32 [frames, channels]
    margin: int


def container(loaded, rate: int, channels: int, seconds: float, per_chunk: int, signals) -> bytes:
    enc = encode_array(signals.noise(int(rate * seconds), channels=channels, amp=0.2, seed=5), rate, loaded)
    buf = io.BytesIO()
    with ContainerWriter(buf, dataclasses.replace(enc.header, frames_per_chunk=per_chunk)) as w:
        write_blocks(w, enc.blocks)
    return buf.getvalue()


def decoded(data: bytes, loaded, **kw):
    out = io.BytesIO()
    result = decode(io.BytesIO(data), out, model=loaded, subtype="FLOAT", **kw)
    return result, sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)[0]


@pytest.fixture(scope="module", params=sorted(CASES))
def made(request, signals) -> Made:
    loaded = request.getfixturevalue(request.param)
    rate, channels, seconds, per_chunk, margin = CASES[request.param]
    data = container(loaded, rate, channels, seconds, per_chunk, signals)
    reader = ContainerReader(io.BytesIO(data))
    offsets = [c.offset for c in reader]
    starts = [chunk_sample(reader.header, i) for i in range(len(offsets) + 1)]
    return Made(loaded, data, offsets, starts, decoded(data, loaded)[1], margin)


def damaged(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset + CHUNK_HEAD_SIZE + 3] ^= 0xFF  # in the payload: the chunk's CRC fails
    return bytes(out)


def test_strict_decode_names_the_chunk_and_its_time_range(made):
    with pytest.raises(ChecksumMismatch, match=r"TOKENS chunk 1 \(frames \d+-\d+, [\d.]+-[\d.]+ s\) is corrupt"):
        decoded(damaged(made.data, made.offsets[1]), made.loaded)


def test_salvage_writes_silence_over_a_lost_chunk_and_keeps_the_length(made):
    result, y = decoded(damaged(made.data, made.offsets[1]), made.loaded, salvage=True)
    a, b = made.starts[1], made.starts[2]
    want = made.audio
    assert y.shape == want.shape and np.abs(want[a:b]).max() > 0.05
    assert len(want) - b > 2 * made.margin  # intact audio after the gap to compare
    assert not y[a:b].any()
    np.testing.assert_allclose(y[:a], want[:a], atol=1e-5)
    np.testing.assert_allclose(y[b + made.margin:], want[b + made.margin:], atol=1e-3)
    [lost] = result.lost
    rate = result.source_sample_rate
    assert (lost.first_chunk, lost.n_chunks, lost.exact) == (1, 1, True)
    assert (lost.start_s, lost.end_s) == (a / rate, b / rate)


def test_salvage_silences_a_lost_last_chunk_to_the_end(made):
    last = len(made.offsets) - 1
    result, y = decoded(damaged(made.data, made.offsets[last]), made.loaded, salvage=True)
    a = made.starts[last]
    assert y.shape == made.audio.shape and not y[a:].any()
    np.testing.assert_allclose(y[:a], made.audio[:a], atol=1e-5)
    assert [(r.first_chunk, r.end_s) for r in result.lost] == [(last, len(y) / result.source_sample_rate)]


def test_salvage_decodes_a_cut_file_up_to_its_last_complete_chunk(made):
    result, y = decoded(made.data[:made.offsets[2] + 4], made.loaded, salvage=True)
    cut = made.starts[2]  # where chunk 2 starts; a segment of chunk 1 reaches past it
    assert cut <= len(y) < cut + made.margin
    np.testing.assert_allclose(y[:cut], made.audio[:cut], atol=1e-5)
    [lost] = result.lost
    assert (lost.first_chunk, lost.n_chunks, lost.start_s) == (2, None, len(y) / result.source_sample_rate)
    assert lost.end_s == len(made.audio) / result.source_sample_rate


def test_salvage_of_a_file_missing_only_its_end_chunk_is_complete(made):
    result, y = decoded(made.data[:-1], made.loaded, salvage=True)
    np.testing.assert_array_equal(y, made.audio)
    assert [(r.start_s, r.end_s) for r in result.lost] == [(result.duration_s, result.duration_s)]


def test_salvage_of_an_intact_file_is_the_normal_decode(made):
    result, y = decoded(made.data, made.loaded, salvage=True)
    np.testing.assert_array_equal(y, made.audio)
    assert result.lost == []


def test_nothing_to_salvage_is_an_error(made):
    with pytest.raises(FormatError, match="nothing to salvage: file cut short before chunk 0"):
        decoded(made.data[:made.offsets[0] + 5], made.loaded, salvage=True)


# ---- the CLI (test_24khz) -----------------------------------------------------------


@pytest.fixture(scope="module")
def bad_tpk(tmp_path_factory, test_24khz, signals):
    data = container(test_24khz, *CASES["test_24khz"][:4], signals)
    offsets = [c.offset for c in ContainerReader(io.BytesIO(data))]
    path = tmp_path_factory.mktemp("salvage") / "bad.tpk"
    path.write_bytes(damaged(data, offsets[1]))
    return path, offsets[1]


def test_cli_strict_decode_fails_in_one_line_and_writes_nothing(bad_tpk, tmp_path):
    path = bad_tpk[0]
    r = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "y.wav")])
    assert r.exit_code == 1 and r.stdout == ""
    assert re.fullmatch(rf"tokpack: {re.escape(str(path))}: offset \d+, crc32: TOKENS chunk 1 \(frames 25-49, "
                        r"0\.33-0\.67 s\) is corrupt \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)\n", r.stderr)
    assert list(tmp_path.iterdir()) == []


def test_cli_salvage_warns_per_lost_range_and_exits_0(bad_tpk, tmp_path):
    path, offset = bad_tpk
    out = tmp_path / "y.wav"
    r = runner.invoke(app, ["decode", str(path), "-o", str(out), "--salvage"])
    assert r.exit_code == 0, r.stderr
    warning, summary = r.stderr.splitlines()
    assert warning == f"tokpack: {path}: warning: chunk 1 lost, 0.33-0.67 s: crc32 mismatch (offset {offset})"
    assert summary.startswith(f"{path} : ") and summary.endswith(f"(1.20 s, {out})")
    assert sf.info(out).frames == 28_800
    r = runner.invoke(app, ["decode", str(path), "-o", str(out), "--salvage", "-f", "-q", "--json"])
    assert r.exit_code == 0 and r.stderr == ""
    assert json.loads(r.stdout)["lost"] == [{
        "first_chunk": 1, "n_chunks": 1, "exact": True, "start_s": 8000 / 24_000, "end_s": 16000 / 24_000,
        "reason": "crc32 mismatch", "offset": offset,
    }]


def test_cli_salvage_with_nothing_intact_fails(bad_tpk, tmp_path):
    path = bad_tpk[0]
    cut = tmp_path / "cut.tpk"
    cut.write_bytes(path.read_bytes()[:200])
    r = runner.invoke(app, ["decode", str(cut), "--salvage"])
    assert r.exit_code == 1
    assert r.stderr == (f"tokpack: {cut}: nothing to salvage: file cut short before chunk 0, 0.00-1.20 s: "
                        "nothing after it could be read\n")
    assert list(tmp_path.iterdir()) == [cut]


def test_cli_salvage_and_test_exclude_each_other(bad_tpk):
    r = runner.invoke(app, ["decode", str(bad_tpk[0]), "-t", "--salvage"])
    assert r.exit_code == 2 and "--salvage" in r.stderr
