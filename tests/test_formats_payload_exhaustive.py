"""Every single-byte change anywhere in the token payload is detected — all 255 of them."""

import io

import numpy as np

from tokpack.errors import ChecksumMismatch
from tokpack.formats import ContainerReader, Header, dumps, read_container
from tokpack.formats.spec import CHUNK_CRC_SIZE, CHUNK_HEAD_SIZE


def test_every_single_byte_change_in_token_payloads_is_a_checksum_mismatch():
    rng = np.random.default_rng(5)
    header = Header(
        model_id="test_24khz", weights_sha256=bytes(32), model_sample_rate=24_000, hop_length=320,
        codebook_size=1024, n_codebooks=2, model_channels=1, source_sample_rate=24_000, source_channels=1,
        frames_per_chunk=16, source_frames=40 * 320, model_samples=40 * 320,
    )
    data = dumps(header, rng.integers(0, 1024, (2, 40)).astype(np.uint16), coder="pack")
    chunks = list(ContainerReader(io.BytesIO(data)))
    positions = [
        i for c in chunks for i in range(c.offset + CHUNK_HEAD_SIZE, c.offset + c.size - CHUNK_CRC_SIZE)
    ]
    assert len(positions) == sum(c.coded_size for c in chunks) == 40 + 40 + 20  # chunks of 16, 16, 8 frames x 2 codebooks x 10 bits, packed
    buf = bytearray(data)
    detected = 0
    for i in positions:
        original = buf[i]
        for value in range(256):
            if value == original:
                continue
            buf[i] = value
            try:
                read_container(io.BytesIO(bytes(buf)))
            except ChecksumMismatch:
                detected += 1
        buf[i] = original
    assert detected == 255 * len(positions)
