"""Token coders of TOKENS chunks: bit packing, zstd over it, zstd over byte planes.

Tokens arrive here as a flat uint16 array in canonical order; the chunk layer owns shapes.
"""

from __future__ import annotations

import numpy as np
import zstandard

from tokpack.errors import FieldOutOfRange
from tokpack.formats import spec

CODER_NAMES = {
    "pack": spec.Coder.PACK,
    "zstd": spec.Coder.PACK_ZSTD,
    "planes": spec.Coder.PLANES_ZSTD,
}
CODER_CHOICES = ("auto", *CODER_NAMES)


def packed_size(n: int, bits: int) -> int:
    """Bytes of ``n`` tokens of ``bits`` bits each, packed and padded to a byte."""
    return (n * bits + 7) // 8


def planes_size(n: int, bits: int) -> int:
    """Bytes of the byte-plane layout: a low-byte plane, then the packed high bits."""
    return n + packed_size(n, max(bits - 8, 0))


def pack(values: np.ndarray, bits: int) -> bytes:
    """Each value as ``bits`` bits, least significant first, bit ``i`` of the stream at
    bit ``i % 8`` of byte ``i // 8``; zero bits pad the last byte."""
    le_bytes = values.astype("<u2").view(np.uint8).reshape(-1, 2)
    value_bits = np.unpackbits(le_bytes, axis=1, bitorder="little")[:, :bits]
    return np.packbits(value_bits, bitorder="little").tobytes()


def unpack(data: bytes, n: int, bits: int) -> np.ndarray | None:
    """Inverse of :func:`pack` for data of exactly ``packed_size(n, bits)`` bytes.

    Returns None when a padding bit is set (the caller reports where).
    """
    stream = np.frombuffer(data, dtype=np.uint8)
    used = n * bits
    if used % 8 and stream[-1] >> (used % 8):
        return None
    value_bits = np.zeros((n, 16), dtype=np.uint8)
    value_bits[:, :bits] = np.unpackbits(stream, count=used, bitorder="little").reshape(n, bits)
    return np.packbits(value_bits, axis=1, bitorder="little").view("<u2").ravel().astype(np.uint16)


def planes(values: np.ndarray, bits: int) -> bytes:
    """Low byte of every value, then the bits above the low byte packed (if any)."""
    low = (values & 0xFF).astype(np.uint8).tobytes()
    return low + pack(values >> 8, bits - 8) if bits > 8 else low


def unplanes(data: bytes, n: int, bits: int) -> np.ndarray | None:
    values = np.frombuffer(data, dtype=np.uint8, count=n).astype(np.uint16)
    if bits <= 8:
        return values
    high = unpack(data[n:], n, bits - 8)
    return None if high is None else values | (high << 8)


def encode(
    values: np.ndarray, bits: int, coder: str, compressor: zstandard.ZstdCompressor
) -> tuple[spec.Coder, bytes]:
    """Code a flat uint16 token array; ``coder`` "auto" keeps the smallest (ties: lowest id)."""
    packed = pack(values, bits)
    coders = {
        spec.Coder.PACK: lambda: packed,
        spec.Coder.PACK_ZSTD: lambda: compressor.compress(packed),
        spec.Coder.PLANES_ZSTD: lambda: compressor.compress(planes(values, bits)),
    }
    candidates = list(spec.Coder) if coder == "auto" else [CODER_NAMES[coder]]
    best, best_payload = candidates[0], coders[candidates[0]]()
    for candidate in candidates[1:]:
        payload = coders[candidate]()
        if len(payload) < len(best_payload):
            best, best_payload = candidate, payload
    return best, best_payload


def decode(
    coder: spec.Coder, data: bytes, n: int, bits: int, *, offset: int, context: str
) -> np.ndarray:
    """Decode ``n`` tokens coded with a known ``coder``; errors name ``offset`` (of ``data``)."""

    def invalid(message: str) -> FieldOutOfRange:
        return FieldOutOfRange(f"{context}: {message}", offset=offset, field="tokens")

    if coder == spec.Coder.PACK:
        expected = packed_size(n, bits)
        content = data
    else:
        expected = packed_size(n, bits) if coder == spec.Coder.PACK_ZSTD else planes_size(n, bits)
        content = _decompress(data, expected, invalid)
    if len(content) != expected:
        raise invalid(
            f"{coder.name} data is {len(content)} bytes, but {n} tokens of {bits} bits "
            f"take exactly {expected}"
        )
    values = (
        unplanes(content, n, bits) if coder == spec.Coder.PLANES_ZSTD else unpack(content, n, bits)
    )
    if values is None:
        raise invalid("padding bits after the last token must be zero")
    return values


def _decompress(data: bytes, expected: int, invalid) -> bytes:
    """One zstd frame that declares exactly ``expected`` bytes of content, nothing after it."""
    if data[:4] != spec.ZSTD_FRAME_MAGIC:
        raise invalid("not a zstd frame (expected magic 28 B5 2F FD)")
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as error:
        raise invalid(f"bad zstd frame header: {error}") from None
    if declared != expected:
        shown = (
            "no content size" if declared == zstandard.CONTENTSIZE_UNKNOWN else f"{declared} bytes"
        )
        raise invalid(f"zstd frame declares {shown}, expected exactly {expected}")
    try:
        return zstandard.ZstdDecompressor().decompress(
            data, max_output_size=expected, allow_extra_data=False
        )
    except zstandard.ZstdError as error:
        raise invalid(f"zstd frame does not decode: {error}") from None
