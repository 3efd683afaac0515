"""Token coders of TOKENS chunks: bit packing, zstd over it, zstd over byte planes, and
the context-modelling CTX coder (:mod:`tokpack.formats.ctx`).

Tokens arrive here as a uint16 array [n_streams, n_codebooks, n_frames]; the byte coders see
it flat, in canonical order.
"""

from __future__ import annotations

import numpy as np
import zstandard

from tokpack.errors import FieldOutOfRange
from tokpack.formats import ctx, spec
from tokpack.formats.prior import Prior

CODER_NAMES = {
    "pack": spec.Coder.PACK,
    "zstd": spec.Coder.PACK_ZSTD,
    "planes": spec.Coder.PLANES_ZSTD,
    "ctx": spec.Coder.CTX,
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
    tokens: np.ndarray,
    bits: int,
    coder: str,
    compressor: zstandard.ZstdCompressor,
    *,
    prior: Prior | None = None,
    codebook_size: int = 0,
    rows: list | None = None,
) -> tuple[spec.Coder, bytes]:
    """Code tokens [n_streams, n_codebooks, n_frames]; ``coder`` "auto" keeps the smallest
    (ties: lowest id), and considers CTX only when a ``prior`` is given. With ``rows``
    (:meth:`ctx.Carry.begin`, changed by coding) CTX is coder 4, CTX_CARRY, else coder 3."""
    values = np.ascontiguousarray(tokens).ravel()
    packed = pack(values, bits)
    ctx_coder = spec.Coder.CTX if rows is None else spec.Coder.CTX_CARRY
    coders = {
        spec.Coder.PACK: lambda: packed,
        spec.Coder.PACK_ZSTD: lambda: compressor.compress(packed),
        spec.Coder.PLANES_ZSTD: lambda: compressor.compress(planes(values, bits)),
        ctx_coder: lambda: ctx.encode(tokens, prior, codebook_size, rows),
    }
    if coder == "auto":
        candidates = [c for c in coders if c != ctx_coder or prior is not None]
    else:
        candidates = [ctx_coder if coder == "ctx" else CODER_NAMES[coder]]
        if coder == "ctx" and prior is None:
            raise ValueError("the CTX coder needs a prior (the uniform one at least)")
    best = best_payload = None
    for candidate in candidates:
        payload = coders[candidate]()
        if candidate == ctx_coder and len(payload) < ctx.min_bytes(tokens.shape, codebook_size):
            continue  # too compressible for CTX's floor: what "auto" picks among the others
        if best_payload is None or len(payload) < len(best_payload):
            best, best_payload = candidate, payload
    if best is None:  # a forced CTX under its floor
        return encode(tokens, bits, "auto", compressor)
    return best, best_payload


def decode(
    coder: spec.Coder,
    data: bytes,
    shape: tuple[int, int, int],
    bits: int,
    *,
    offset: int,
    context: str,
    prior: Prior | None = None,
    codebook_size: int = 0,
    rows: list | None = None,
) -> np.ndarray:
    """Decode tokens [n_streams, n_codebooks, n_frames] coded with a known ``coder`` (CTX
    needs the ``prior``, CTX_CARRY also the ``rows`` it starts from, which it changes);
    errors name ``offset`` (of ``data``)."""

    def invalid(message: str) -> FieldOutOfRange:
        return FieldOutOfRange(f"{context}: {message}", offset=offset, field="tokens")

    if coder in (spec.Coder.CTX, spec.Coder.CTX_CARRY):
        if (coder == spec.Coder.CTX_CARRY) != (rows is not None):
            raise ValueError("CTX_CARRY, and only it, starts from carried models")
        try:
            tokens = ctx.decode(data, shape, prior, codebook_size, rows)
        except Exception as error:  # constriction rejects the stream (it asserts, raises ...)
            raise invalid(f"CTX data does not decode: {error}") from None
        if tokens is None:
            raise invalid("CTX data must be whole 32-bit words, all of them used")
        return tokens.ravel()
    n = int(np.prod(shape))
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
