"""Salvage keeps every intact chunk and names what was lost."""

import io

import numpy as np
import pytest

from tokpack.errors import FormatError
from tokpack.formats import ContainerReader, Header, dumps
from tokpack.formats.salvage import salvage
from tokpack.formats.spec import CHUNK_HEAD_SIZE


def container(frames=75 * 7, per_chunk=75):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 1024, (1, 4, frames)).astype(np.uint16)
    header = Header(
        model_id="test_24khz", weights_sha256=bytes(32), model_sample_rate=24_000, hop_length=320,
        codebook_size=1024, n_codebooks=4, model_channels=1, source_sample_rate=24_000, source_channels=1,
        frames_per_chunk=per_chunk, source_frames=frames * 320, model_samples=frames * 320,
    )
    data = dumps(header, tokens, coder="pack")
    offsets = [c.offset for c in ContainerReader(io.BytesIO(data))]
    return data, tokens, offsets


def salvaged(data):
    return salvage(io.BytesIO(bytes(data)))


def test_intact_file_salvages_whole():
    data, tokens, _ = container()
    s = salvaged(data)
    assert s.damage == [] and not s.truncated and s.trailer.n_chunks == 7
    assert np.array_equal(np.concatenate([c.tokens for c in s.chunks], axis=2), tokens)


def test_damaged_payload_loses_exactly_that_chunk():
    data, tokens, offsets = container()
    data = bytearray(data)
    data[offsets[3] + CHUNK_HEAD_SIZE + 10] ^= 0xFF
    s = salvaged(data)
    assert [c.index for c in s.chunks] == [0, 1, 2, 4, 5, 6]
    assert [(d.first_chunk, d.n_chunks, d.exact) for d in s.damage] == [(3, 1, True)]
    assert s.describe() == [f"chunk 3 lost, 3.00-4.00 s: {s.damage[0].reason} (offset {offsets[3]})"]
    assert "crc32" in s.damage[0].reason
    for c in s.chunks:
        assert np.array_equal(c.tokens, tokens[:, :, c.first_frame : c.first_frame + 75])


def test_damaged_length_field_resynchronises_and_end_settles_the_count():
    data, tokens, offsets = container()
    data = bytearray(data)
    data[offsets[2] + 5] ^= 0x40  # length field: framing now runs past the file
    s = salvaged(data)
    assert [c.index for c in s.chunks] == [0, 1, 3, 4, 5, 6]
    assert [(d.first_chunk, d.n_chunks, d.exact) for d in s.damage] == [(2, 1, True)]


@pytest.mark.parametrize("cut", [0.3, 0.55, 0.9])
def test_truncated_file_keeps_every_complete_chunk(cut):
    data, tokens, offsets = container()
    end = int(len(data) * cut)
    s = salvaged(data[:end])
    complete = sum(1 for i, o in enumerate(offsets) if (offsets + [len(data) - 56])[i + 1] <= end)
    assert s.truncated and s.trailer is None
    assert [c.index for c in s.chunks] == list(range(complete))
    assert s.describe()[-1].startswith("file cut short")


def test_damaged_header_is_still_fatal():
    data = bytearray(container()[0])
    data[20] ^= 1
    with pytest.raises(FormatError):
        salvaged(data)
