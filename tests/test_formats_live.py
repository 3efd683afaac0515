"""Live containers (FORMAT.md "Live containers"): LIVE after the header, LAST before the
chunk that ends the signal, every rule about them checked, and skipped by older readers."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from tokpack.errors import FieldOutOfRange, Truncated
from tokpack.formats import ContainerReader, ContainerWriter, Header, spec
from tokpack.formats.chunk import frame_chunk
from tokpack.formats.salvage import SalvageReader

HOP = 320


def live_header(**fields) -> Header:
    base = dict(model_id="test_24khz", weights_sha256=bytes(32), model_sample_rate=24_000,
                hop_length=HOP, codebook_size=1024, n_codebooks=2, model_channels=1,
                source_sample_rate=24_000, source_channels=1, n_streams=1, channel_mode=0,
                frames_per_chunk=3, source_frames=None, model_samples=None)
    return Header(**{**base, **fields})


def written(pending: int, final: int, samples: int, **fields) -> bytes:
    """``pending`` frames through write(), ``final`` through close(last=...)."""
    buf = io.BytesIO()
    w = ContainerWriter(buf, live_header(**fields), coder="pack", live=True)
    w.write(np.arange(2 * pending).reshape(2, pending) % 1024)
    w.close(source_frames=samples, model_samples=samples,
            last=np.ones((2, final), np.int64) if final else None)
    return buf.getvalue()


def read(data: bytes) -> list:
    r = ContainerReader(io.BytesIO(data))
    seen = [(c.n_frames, r.live, r.last) for c in r]
    return [seen, r.trailer.model_samples]


@pytest.mark.parametrize("pending, final, samples, chunks", [
    (0, 0, 0, []),
    (3, 0, 3 * HOP, [3]),  # the last chunk went out full before the end was known
    (2, 2, 4 * HOP - 7, [3, 1]),  # the chunk with the end comes after LAST
    (1, 2, 3 * HOP - 1, [3]),
    (0, 7, 7 * HOP - 300, [3, 3, 1]),
])
def test_last_comes_before_the_chunk_that_ends_the_signal(pending, final, samples, chunks):
    data = written(pending, final, samples)
    assert data[8:10] == bytes([1, spec.LIVE_MINOR])  # version 1.3
    seen, total = read(data)
    assert [n for n, _, _ in seen] == chunks and total == samples
    assert all(live for _, live, _ in seen)
    types = _chunk_types(data)
    assert types[0] == spec.LIVE_CHUNK and types.count(spec.LAST_CHUNK) == 1
    assert types[-1] == spec.ChunkType.END
    after = types[types.index(spec.LAST_CHUNK) + 1:-1].count(spec.ChunkType.TOKENS)
    assert after == (0 if pending == 3 else min(len(chunks), 1))
    # the reader knows LAST's lengths when the chunk after it arrives, not before
    lasts = [last for _, _, last in seen]
    assert lasts == [None] * (len(chunks) - after) + [(samples, samples)] * after


def _chunk_types(data: bytes) -> list[int]:
    at, types = spec.HEADER_SIZE_1_1, []
    while at < len(data):
        kind, _, _, length = struct.unpack(spec.CHUNK_HEAD_STRUCT, data[at:at + 8])
        types.append(kind)
        at += spec.CHUNK_FRAMING_SIZE + length
    return types


def _rebuild(header: Header, records: list[bytes]) -> bytes:
    return header.to_bytes() + b"".join(records)


def _records(data: bytes) -> list[bytes]:
    at, out = spec.HEADER_SIZE_1_1, []
    while at < len(data):
        length = struct.unpack("<I", data[at + 4:at + 8])[0]
        out.append(data[at:at + spec.CHUNK_FRAMING_SIZE + length])
        at += spec.CHUNK_FRAMING_SIZE + length
    return out


def _header(data: bytes) -> Header:
    return Header.from_bytes(data[:spec.HEADER_SIZE_1_1])


def _last(source: int, model: int) -> bytes:
    return frame_chunk(spec.LAST_CHUNK, 0, 0, struct.pack(spec.LAST_STRUCT, source, model))


def test_every_misplaced_or_wrong_live_chunk_is_refused():
    data = written(2, 2, 4 * HOP - 7)  # LIVE, T3, LAST, T1, END
    rec = _records(data)
    h = _header(data)
    live, t3, last, t1, end = rec
    cases = {
        "no LAST": [live, t3, t1, end],
        "LAST without LIVE": [t3, last, t1, end],
        "LIVE not first": [t3, live, last, t1, end],
        "LAST twice": [live, t3, last, last, t1, end],
        "two chunks after LAST": [live, last, t3, t1, end],
        "LAST's lengths differ from END's": [live, t3, _last(4 * HOP - 8, 4 * HOP - 8), t1, end],
        "LAST shorter than the frames before it": [live, t3, _last(2 * HOP, 2 * HOP), t1, end],
        "LAST out of range": [live, t3, _last(2**49, 4 * HOP - 7), t1, end],
        "LIVE with a payload": [frame_chunk(spec.LIVE_CHUNK, 0, 0, b"x"), t3, last, t1, end],
        "LAST with param": [live, t3, frame_chunk(spec.LAST_CHUNK, 1, 0, last[8:-4]), t1, end],
    }
    for why, records in cases.items():
        with pytest.raises(FieldOutOfRange):
            read(_rebuild(h, records))
        assert why  # (the case's name, in the traceback)
    assert read(_rebuild(h, rec))[1] == 4 * HOP - 7
    # a live header must be unsegmented
    with pytest.raises(ValueError, match="unsegmented"):
        ContainerWriter(io.BytesIO(), live_header(segment_length=48_000, segment_stride=47_520,
                                                  frames_per_chunk=150), live=True)


def test_readers_of_earlier_versions_skip_them():
    """In a 1.2 file the two types are unknown optional chunks: skipped, not checked."""
    data = written(2, 2, 4 * HOP - 7)
    old = _header(data)
    import dataclasses

    older = dataclasses.replace(old, version_minor=2)
    live, t3, last, t1, end = _records(data)
    seen, total = read(_rebuild(older, [t3, last, live, t1, end]))  # misplaced, yet skipped
    assert [n for n, *_ in seen] == [3, 1] and total == 4 * HOP - 7
    assert not any(is_live for _, is_live, _ in seen)


def test_a_stream_cut_before_last_is_truncated_and_salvaged():
    data = written(0, 7, 7 * HOP - 300)
    rec = _records(data)
    cut = _rebuild(_header(data), rec[:3])  # LIVE and two chunks: killed before LAST
    with pytest.raises(Truncated):
        read(cut)
    salvaged = SalvageReader(io.BytesIO(cut))
    assert [c.n_frames for c in salvaged] == [3, 3]
    assert salvaged.trailer.model_samples == 6 * HOP
