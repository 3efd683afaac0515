"""Container mutations for fuzzing the reader: random damage and field-targeted edits.

Shared by tests/fuzz/test_fuzz_reader.py (a fast seeded subset in the normal suite) and
scripts/fuzz_container.py (the long run). Every mutation is a pure function of the input
bytes and a ``random.Random``, so a failing case is reproduced from its seed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import struct
import zlib

import numpy as np

from tokpack.formats import ContainerReader, Header, coding, dumps
from tokpack.formats import spec
from tokpack.formats.chunk import frame_chunk
from tokpack.formats.prior import uniform_prior

FIELD_VALUES = ("zero", "max", "random", "plus_one", "minus_one")


def seed_containers() -> dict[str, bytes]:
    """Small valid containers covering every layout: plain, segmented, multi-stream, coders."""
    rng = np.random.default_rng(11)

    def header(**kw) -> Header:
        base = dict(model_id="test_24khz", weights_sha256=bytes(range(32)), model_sample_rate=24_000,
                    hop_length=320, codebook_size=1024, n_codebooks=4, model_channels=1,
                    source_sample_rate=44_100, source_channels=1, resampler=1, frames_per_chunk=40)
        base.update(kw)
        n = base.pop("_frames")
        base.setdefault("model_samples", n * base["hop_length"])
        base.setdefault("source_frames", base["model_samples"] * 44_100 // base["model_sample_rate"])
        return Header(**base)

    seeds = {}
    for coder in ("pack", "zstd", "planes"):
        toks = (rng.zipf(1.4, (1, 4, 130)) % 1024).astype(np.uint16)
        seeds[f"plain_{coder}"] = dumps(header(_frames=130), toks, coder=coder)
    toks = rng.integers(0, 1000, (3, 2, 50)).astype(np.uint16)
    seeds["split3"] = dumps(header(_frames=50, n_codebooks=2, codebook_size=1000, n_streams=3, channel_mode=3,
                                   source_channels=3), toks)
    h = header(_frames=0, model_id="test_48khz", model_sample_rate=48_000, model_channels=2, source_channels=2,
               segment_length=48_000, segment_stride=47_520, frames_per_chunk=300, n_codebooks=2,
               model_samples=47_520 * 2 + 600)  # segments of 150, 150, 2 frames: at most 95,680
    frames = [150, 150, 2]
    toks = rng.integers(0, 1024, (1, 2, sum(frames))).astype(np.uint16)
    seeds["segmented"] = dumps(h, toks, segment_frames=frames, scales=np.array([[0.5], [0.25], [0.125]], np.float32))
    seeds["empty"] = dumps(header(_frames=0), np.zeros((1, 4, 0), np.uint16))
    toks = (rng.zipf(1.4, (1, 4, 130)) % 1024).astype(np.uint16)  # coders 3, 4, 3, 4 (1.4)
    seeds["carried_ctx"] = dumps(header(_frames=130), toks, coder="ctx",
                                 prior=uniform_prior(1024, 4), keyframe=2)
    return seeds


def chunk_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, total size) of every chunk of a valid container, END included."""
    reader = ContainerReader(io.BytesIO(data))
    out = [(c.offset, c.size) for c in reader]
    end = out[-1][0] + out[-1][1] if out else reader.header.to_bytes().__len__()
    out.append((end, spec.END_CHUNK_SIZE))
    return out


def _value(rng: random.Random, kind: str, size: int, old: int) -> int:
    top = (1 << (8 * size)) - 1
    return {"zero": 0, "max": top, "random": rng.randint(0, top), "plus_one": min(old + 1, top),
            "minus_one": max(old - 1, 0)}[kind]


def _set_int(data: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into("<" + fmt, data, offset, value)


def _fix_header_crc(data: bytearray) -> None:
    size = struct.unpack_from("<H", data, 10)[0]
    if 16 <= size <= len(data):
        _set_int(data, size - 4, "I", zlib.crc32(bytes(data[: size - 4])))


def _fix_chunk_crc(data: bytearray, offset: int) -> None:
    length = struct.unpack_from("<I", data, offset + 4)[0]
    end = offset + spec.CHUNK_HEAD_SIZE + length
    if end + 4 <= len(data):
        _set_int(data, end, "I", zlib.crc32(bytes(data[offset:end])))


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation; returns its kind and the mutated bytes."""
    out = bytearray(data)
    kind = rng.choice(("bitflip", "byte_run", "truncate", "insert", "delete", "header_field",
                       "header_field_crc_fixed", "chunk_field", "chunk_field_crc_fixed", "payload_crc_fixed",
                       "duplicate_chunk", "swap_chunks", "append"))
    n = len(out)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "byte_run":
        i = rng.randrange(n)
        fill = rng.choice((0x00, 0xFF, None))
        for j in range(i, min(n, i + rng.randint(1, 64))):
            out[j] = rng.randrange(256) if fill is None else fill
    elif kind == "truncate":
        del out[rng.randrange(n):]
    elif kind == "insert":
        i = rng.randrange(n + 1)
        out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif kind == "delete":
        i = rng.randrange(n)
        del out[i:i + rng.randint(1, 32)]
    elif kind.startswith("header_field"):
        name, offset, fmt = rng.choice(spec.HEADER_FIELDS)
        if fmt.endswith("s"):
            size = int(fmt[:-1])
            i = offset + rng.randrange(size)
            out[i] = rng.choice((0, 0xFF, rng.randrange(256)))
        else:
            size = struct.calcsize(fmt)
            old = struct.unpack_from("<" + fmt, out, offset)[0]
            _set_int(out, offset, fmt, _value(rng, rng.choice(FIELD_VALUES), size, old))
        kind = f"{kind}:{name}"
        if kind.startswith("header_field_crc_fixed"):
            _fix_header_crc(out)
    elif kind.startswith("chunk_field") or kind == "payload_crc_fixed":
        chunks = chunk_offsets(data)
        offset, size = rng.choice(chunks)
        if kind == "payload_crc_fixed":
            if size > spec.CHUNK_FRAMING_SIZE:
                out[offset + spec.CHUNK_HEAD_SIZE + rng.randrange(size - spec.CHUNK_FRAMING_SIZE)] ^= 1 << rng.randrange(8)
            _fix_chunk_crc(out, offset)
        else:
            name, at, fmt = rng.choice((("type", 0, "B"), ("param", 1, "B"), ("count", 2, "H"), ("length", 4, "I")))
            old = struct.unpack_from("<" + fmt, out, offset + at)[0]
            _set_int(out, offset + at, fmt, _value(rng, rng.choice(FIELD_VALUES), struct.calcsize(fmt), old))
            kind = f"{kind}:{name}"
            if kind.startswith("chunk_field_crc_fixed"):
                _fix_chunk_crc(out, offset)
    elif kind in ("duplicate_chunk", "swap_chunks"):
        chunks = chunk_offsets(data)
        (a, sa), (b, sb) = rng.choice(chunks), rng.choice(chunks)
        if kind == "duplicate_chunk":
            out[b:b] = data[a:a + sa]
        elif a != b:
            (a, sa), (b, sb) = sorted(((a, sa), (b, sb)))
            out[a:b + sb] = data[b:b + sb] + data[a + sa:b] + data[a:a + sa]
    else:  # append
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return kind, bytes(out)


# ---------------------------------------------------------------------------------------
# Crafted hostile files. Unlike ``mutate``, which damages valid files at random, these
# are built to press on the reader limits (FORMAT.md "Reader limits", "Salvage"): huge
# length claims, extreme channel layouts, symbol-count bombs, oversized optional chunks,
# and hostile .ecdc metadata. Every CRC in them is valid (recomputed), so the checks
# behind the CRCs are what gets exercised. Each family is a pure function of a
# ``random.Random``; the kind it returns starts with the family's name.

CRAFTED_FAMILIES = ("lengths", "channels", "symbols", "optional", "ecdc")

#: length claims for source_frames / model_samples (header and END)
LENGTH_CLAIMS = (2**48, 2**48 - 1, 2**48 + 1, 2**31, 2**31 - 1, 2**32, 2**63, spec.UNKNOWN - 1)
#: largest crafted input (the "optional" family: two 16 MiB payloads and change)
MAX_CRAFTED_BYTES = 40 * 2**20

_HEADER_DEFAULTS = dict(
    magic=spec.MAGIC, version_major=spec.VERSION_MAJOR, version_minor=0, flags=0,
    model_id=b"test_24khz", weights_sha256=bytes(range(32)), model_sample_rate=24_000,
    hop_length=320, codebook_size=1024, n_codebooks=4, model_channels=1, n_streams=1,
    channel_mode=spec.ChannelMode.AS_IS, segment_length=0, segment_stride=0, frames_per_chunk=40,
    resampler=spec.Resampler.NONE, reserved_107=0, source_sample_rate=24_000, source_channels=1,
    reserved_114=0, source_frames=spec.UNKNOWN, model_samples=spec.UNKNOWN,
)
_END_FIELDS = dict(spec.END_FIELDS)


@functools.lru_cache(maxsize=1)
def _seeds() -> dict[str, bytes]:
    return seed_containers()


def raw_header(**fields) -> bytes:
    """Header bytes with any field values (no validation) and a valid CRC. A
    ``version_minor`` of 1 or more makes a 168-byte header with ``prior_sha256`` (zeros:
    the uniform prior); ``header_size`` defaults to the size the version needs."""
    values = dict(_HEADER_DEFAULTS)
    values.update(fields)
    prior_sha256 = values.pop("prior_sha256", spec.UNIFORM_PRIOR_SHA256)
    minor = values["version_minor"]
    values.setdefault("header_size", spec.HEADER_SIZE if minor == 0 else spec.HEADER_SIZE_1_1)
    body = struct.pack(spec.HEADER_STRUCT, *(values[name] for name, _, _ in spec.HEADER_FIELDS))
    if minor >= 1:
        body += prior_sha256
    body += bytes(max(values["header_size"] - spec.HEADER_CRC_SIZE - len(body), 0))
    return body + struct.pack("<I", zlib.crc32(body))


def end_chunk(n_chunks: int, total_frames: int, source_frames: int, model_samples: int,
              digest: bytes) -> bytes:
    """An END chunk with these values (u64 fields wrap to 64 bits) and a valid CRC."""
    mask = (1 << 64) - 1
    payload = struct.pack(spec.END_STRUCT, n_chunks & 0xFFFF_FFFF, total_frames & mask,
                          source_frames & mask, model_samples & mask, digest)
    return frame_chunk(spec.ChunkType.END, 0, 0, payload)


def set_header_fields(data: bytes, **fields) -> bytes:
    """``data`` with header fields set (any value that fits the field) and the CRC fixed."""
    out = bytearray(data)
    for name, value in fields.items():
        fmt = dict((n, f) for n, _, f in spec.HEADER_FIELDS)[name]
        _set_int(out, spec.HEADER_OFFSET[name], fmt, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    _fix_header_crc(out)
    return bytes(out)


def set_end_fields(data: bytes, **fields) -> bytes:
    """``data`` (a container ending with its END chunk) with END payload fields set and
    END's CRC fixed."""
    out = bytearray(data)
    at = len(out) - spec.END_CHUNK_SIZE
    assert out[at] == spec.ChunkType.END, "the data does not end with an END chunk"
    for name, value in fields.items():
        fmt = "I" if name == "n_chunks" else "Q"
        _set_int(out, at + spec.CHUNK_HEAD_SIZE + _END_FIELDS[name], fmt,
                 value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    _fix_chunk_crc(out, at)
    return bytes(out)


def zstd_rle_frame(content: int, fill: int = 0, *, declared: int | None = None,
                   single_segment: bool = True, window_log: int = 17) -> bytes:
    """A zstd frame (RFC 8878) of ``content`` bytes of ``fill`` as RLE blocks of at most
    128 KiB: a few bytes per 128 KiB, whatever it declares. ``declared``: the 8-byte
    Frame_Content_Size (default: ``content``; -1: none declared)."""
    declared = content if declared is None else declared
    if declared < 0:  # no content size: a window descriptor, no FCS field
        out = spec.ZSTD_FRAME_MAGIC + bytes([0x00, (window_log - 10) << 3])
    elif single_segment:  # FCS_flag 3 (8 bytes), Single_Segment_flag
        out = spec.ZSTD_FRAME_MAGIC + bytes([0xE0]) + struct.pack("<Q", declared & ((1 << 64) - 1))
    else:
        out = (spec.ZSTD_FRAME_MAGIC + bytes([0xC0, (window_log - 10) << 3])
               + struct.pack("<Q", declared & ((1 << 64) - 1)))
    parts = [out]
    block_max = min(1 << 17, 1 << window_log) if not single_segment or declared < 0 else 1 << 17
    left = content
    while True:
        n = min(left, block_max)
        left -= n
        last = int(left == 0)
        if n == 0:  # an empty raw block
            parts.append((last).to_bytes(3, "little"))
        else:  # an RLE block: Block_Type 1, the byte once
            parts.append(((n << 3) | (1 << 1) | last).to_bytes(3, "little") + bytes([fill]))
        if last:
            return b"".join(parts)


def _file(header: bytes, chunks: list[bytes], end: bytes) -> bytes:
    return b"".join([header, *chunks, end])


def _huge_length(rng: random.Random) -> int:
    if rng.random() < 0.75:
        return rng.choice(LENGTH_CLAIMS)
    return rng.randint(2**32, spec.MAX_LENGTH)  # huge but in range


def crafted_lengths(rng: random.Random) -> tuple[str, bytes]:
    """Header and/or END source_frames/model_samples claiming 2^48, 2^31, 2^48-1, ...,
    CRCs fixed; also an UNKNOWN-length header with END claiming huge lengths, and claims
    consistent with each other (rule 6) but not with the frames."""
    seeds = _seeds()
    name = rng.choice(sorted(seeds))
    data = seeds[name]
    variant = rng.choice(("header", "end", "both", "unknown_header", "consistent"))
    which = rng.choice((("source_frames",), ("model_samples",), ("source_frames", "model_samples")))
    if variant == "consistent":  # both known and agreeing (rule 6), far beyond the frames
        model = rng.choice((spec.MAX_LENGTH, 2**31, rng.randint(2**32, spec.MAX_LENGTH)))
        header = ContainerReader(io.BytesIO(data)).header
        if model * header.source_sample_rate // header.model_sample_rate > spec.MAX_LENGTH:
            model = spec.MAX_LENGTH * header.model_sample_rate // header.source_sample_rate
        source = model * header.source_sample_rate // header.model_sample_rate  # <= 2^48
        values = dict(source_frames=source, model_samples=model)
        data = set_end_fields(set_header_fields(data, **values), **values)
        return f"lengths:consistent:{name}", data
    values = {field: _huge_length(rng) for field in which}
    if variant in ("header", "both"):
        data = set_header_fields(data, **values)
    if variant == "unknown_header":
        data = set_header_fields(data, source_frames=spec.UNKNOWN, model_samples=spec.UNKNOWN)
    if variant != "header":
        data = set_end_fields(data, **values)
    return f"lengths:{variant}:{'+'.join(which)}:{name}", data


def _tokens(rng: random.Random, shape: tuple[int, int, int], codebook_size: int) -> np.ndarray:
    return np.random.default_rng(rng.getrandbits(32)).integers(0, codebook_size, shape).astype(np.uint16)


def channel_container(rng: random.Random, mode: str, source_rate: int = 768_000,
                      frames: int | None = None) -> bytes:
    """A valid container with an extreme channel layout: ``downmix`` (1024 source channels
    to mono), ``fold`` (1024 to stereo), ``split`` (64 streams), ``upmix`` (mono to 8
    model channels), ``as_is`` (8 channels), at ``source_rate`` (resampled unless 24 kHz)."""
    model_channels, source_channels, n_streams, channel_mode = {
        "downmix": (1, 1024, 1, spec.ChannelMode.DOWNMIX),
        "fold": (2, 1024, 1, spec.ChannelMode.FOLD_STEREO),
        "split": (1, 64, 64, spec.ChannelMode.SPLIT),
        "upmix": (8, 1, 1, spec.ChannelMode.UPMIX),
        "as_is": (8, 8, 1, spec.ChannelMode.AS_IS),
    }[mode]
    n_codebooks = rng.choice((1, 2, 8, 32))
    frames = rng.randint(0, 120) if frames is None else frames
    model_samples = max(frames * 320 - rng.randint(0, 319), 0)
    source_frames = rng.choice((
        (model_samples + 1) * source_rate // 24_000,  # the most rule 6 allows
        model_samples * source_rate // 24_000, 0))
    header = Header(
        model_id="test_24khz", weights_sha256=bytes(range(32)), model_sample_rate=24_000,
        hop_length=320, codebook_size=1024, n_codebooks=n_codebooks, model_channels=model_channels,
        source_sample_rate=source_rate, source_channels=source_channels, n_streams=n_streams,
        channel_mode=channel_mode, frames_per_chunk=rng.choice((1, 7, 40, 750)),
        resampler=spec.Resampler.NONE if source_rate == 24_000 else spec.Resampler.SINC_HANN,
        source_frames=source_frames, model_samples=model_samples,
    )
    tokens = _tokens(rng, (n_streams, n_codebooks, frames), 1024)
    return dumps(header, tokens, coder=rng.choice(("pack", "zstd", "planes")))


#: header edits that break a channel rule or range (any value that fits the field)
_CHANNEL_BREAKS = (
    ("source_channels", 1025), ("source_channels", 65535), ("source_channels", 0),
    ("source_sample_rate", 768_001), ("source_sample_rate", 0), ("source_sample_rate", 2**32 - 1),
    ("channel_mode", 5), ("channel_mode", 255), ("resampler", 2), ("resampler", 0),
    ("model_channels", 9), ("model_channels", 0), ("n_streams", 65), ("n_streams", 2),
)


def crafted_channels(rng: random.Random) -> tuple[str, bytes]:
    """Valid files with 1024 source channels at 768 kHz (DOWNMIX / FOLD_STEREO, resampler
    1), 64 SPLIT streams, 8 model channels; sometimes with UNKNOWN header lengths, or with
    one channel field pushed just out of its rule (CRC fixed)."""
    mode = rng.choice(("downmix", "downmix", "fold", "split", "upmix", "as_is"))
    rate = rng.choice((768_000, 768_000, 767_999, 1, 8_000, 44_100, 24_000))
    data = channel_container(rng, mode, rate)
    variant = rng.choice(("valid", "valid", "unknown_lengths", "broken"))
    if variant == "unknown_lengths":
        data = set_header_fields(data, source_frames=spec.UNKNOWN, model_samples=spec.UNKNOWN)
    elif variant == "broken":
        field, value = rng.choice(_CHANNEL_BREAKS)
        data = set_header_fields(data, **{field: value})
        variant = f"broken_{field}={value}"
    return f"channels:{mode}:{rate}:{variant}", data


#: (n_streams, n_codebooks) pairs for which some frames_per_chunk <= 65535 exceeds 2^21 tokens
_BOMB_SHAPES = ((64, 32), (64, 64), (32, 64), (2, 32), (1, 64), (64, 1), (16, 16))


def _layout(n_streams: int) -> dict:
    """Header fields for ``n_streams`` streams of the mono 24 kHz test model."""
    if n_streams == 1:
        return dict(n_streams=1, channel_mode=spec.ChannelMode.AS_IS, source_channels=1)
    return dict(n_streams=n_streams, channel_mode=spec.ChannelMode.SPLIT, source_channels=n_streams)


def token_bomb_header(n_streams: int = 64, n_codebooks: int = 32, frames_per_chunk: int = 65535,
                      **fields) -> bytes:
    """A header (CRC valid) whose chunks would hold n_streams x n_codebooks x
    frames_per_chunk tokens: rejected (rule 5) above 2^21."""
    return raw_header(n_codebooks=n_codebooks, frames_per_chunk=frames_per_chunk,
                      **_layout(n_streams), **fields)


def ctx_tiny_container(rng: random.Random, n_chunks: int = 1, payload_bytes: int = 0, *,
                       n_streams: int = 1, n_codebooks: int = 32, codebook_size: int = 1024,
                       frames_per_chunk: int | None = None, full: bool = True) -> bytes:
    """A 1.1 header (168 bytes, uniform prior), then ``n_chunks`` CTX chunks of
    ``payload_bytes`` random bytes claiming many frames each (``full``: every chunk
    ``frames_per_chunk`` frames), then an END that agrees with the claims."""
    most = min(65535, spec.MAX_CHUNK_TOKENS // (n_streams * n_codebooks))
    per_chunk = most if frames_per_chunk is None else frames_per_chunk
    header = raw_header(version_minor=1, n_codebooks=n_codebooks, codebook_size=codebook_size,
                        frames_per_chunk=per_chunk, **_layout(n_streams))
    chunks, total = [], 0
    for _ in range(n_chunks):
        count = per_chunk if full else rng.randint(1, per_chunk)
        chunks.append(frame_chunk(spec.ChunkType.TOKENS, spec.Coder.CTX, count, rng.randbytes(payload_bytes)))
        total += count
    samples = total * 320
    return _file(header, chunks, end_chunk(n_chunks, total, samples, samples, rng.randbytes(16)))


def zstd_bomb_container(n_chunks: int = 1, *, n_streams: int = 1, n_codebooks: int = 32,
                        frames_per_chunk: int = 65535, codebook_size: int = 65536, fill: int = 0,
                        coder: int = spec.Coder.PACK_ZSTD, declared: int | None = None,
                        content: int | None = None) -> bytes:
    """``n_chunks`` full TOKENS chunks, each one small zstd frame of RLE blocks decoding to
    constant tokens; with the defaults (2^21 - 32 tokens a chunk) a valid file holding
    ~13,000 tokens per byte. ``declared`` / ``content`` override the frame's declared and
    actual content sizes (default: the exact size)."""
    header_fields = dict(n_codebooks=n_codebooks, codebook_size=codebook_size,
                         frames_per_chunk=frames_per_chunk, **_layout(n_streams))
    bits = (codebook_size - 1).bit_length()
    n_tokens = n_streams * n_codebooks * frames_per_chunk
    exact = (n_tokens + (-(-n_tokens * max(bits - 8, 0) // 8)) if coder == spec.Coder.PLANES_ZSTD
             else -(-n_tokens * bits // 8))
    frame = zstd_rle_frame(exact if content is None else content, fill, declared=declared)
    chunk = frame_chunk(spec.ChunkType.TOKENS, coder, frames_per_chunk, frame)
    token_bytes = bytes([fill if bits == 16 else 0]) * (2 * n_tokens)  # what a valid frame decodes to
    digest = hashlib.blake2b(digest_size=spec.DIGEST_SIZE)
    for _ in range(n_chunks):
        digest.update(token_bytes)
    total = n_chunks * frames_per_chunk
    samples = total * 320
    end = end_chunk(n_chunks, total, samples, samples, digest.digest())
    return _file(raw_header(**header_fields), [chunk] * n_chunks, end)


def crafted_symbols(rng: random.Random) -> tuple[str, bytes]:
    """Symbol-count bombs: headers far over 2^21 tokens a chunk with tiny chunks; zstd
    frames declaring huge (or wrong) content sizes; valid files of constant tokens at the
    2^21 limit; CTX chunks with 0..8-byte payloads claiming many frames (up to 1000
    chunks); CTX chunks of random bytes at the payload floor, some with one-frame rows
    (the most work per byte)."""
    variant = rng.choice(("header_tokens", "zstd_declared", "zstd_exact", "ctx_tiny",
                          "ctx_tiny", "ctx_floor", "ctx_short_rows"))
    if variant == "header_tokens":
        n_streams, n_codebooks = rng.choice(_BOMB_SHAPES)
        least = spec.MAX_CHUNK_TOKENS // (n_streams * n_codebooks) + 1
        per_chunk = rng.choice((65535, least, rng.randint(least, 65535), least - 1))
        header = token_bomb_header(n_streams, n_codebooks, per_chunk,
                                   version_minor=rng.choice((0, 1)),
                                   codebook_size=rng.choice((1024, 65536)))
        chunks = [frame_chunk(spec.ChunkType.TOKENS, rng.randrange(4), per_chunk,
                              rng.randbytes(rng.randint(0, 16)))
                  for _ in range(rng.randint(0, 16))]
        total = len(chunks) * per_chunk
        end = end_chunk(len(chunks), total, total * 320, total * 320, rng.randbytes(16))
        return f"symbols:header_tokens:{n_streams}x{n_codebooks}x{per_chunk}", _file(header, chunks, end)
    if variant in ("zstd_declared", "zstd_exact"):
        n_streams, n_codebooks, per_chunk = rng.choice(
            ((1, 32, 65535), (64, 64, 512), (2, 16, 65535), (64, 32, 1024), (1, 8, 4096)))
        codebook_size = rng.choice((1024, 65536))
        coder = rng.choice((spec.Coder.PACK_ZSTD, spec.Coder.PLANES_ZSTD))
        fill = 0 if codebook_size == 1024 else rng.choice((0, 0xFF))
        shape = f"{n_streams}x{n_codebooks}x{per_chunk}"
        if variant == "zstd_exact":  # valid: at most 4 chunks (~8M tokens, a fraction of a second)
            n = rng.randint(1, 4)
            data = zstd_bomb_container(n, n_streams=n_streams, n_codebooks=n_codebooks,
                                       frames_per_chunk=per_chunk, codebook_size=codebook_size,
                                       fill=fill, coder=coder)
            return f"symbols:zstd_exact:{shape}:{n}", data
        bits = (codebook_size - 1).bit_length()
        exact = -(-n_streams * n_codebooks * per_chunk * bits // 8)
        declared = rng.choice((2**32, 2**40, 2**63, 2**64 - 1, 2**64 - 2, exact + 1, 2 * exact,
                               exact - 1, exact, -1))
        content = rng.choice((exact, exact + 1, exact - 1, 1 << 17, 0))
        data = zstd_bomb_container(rng.randint(1, 3), n_streams=n_streams, n_codebooks=n_codebooks,
                                   frames_per_chunk=per_chunk, codebook_size=codebook_size,
                                   fill=fill, coder=coder, declared=declared, content=content)
        return f"symbols:zstd_declared:{shape}:{declared}/{content}", data
    if variant == "ctx_tiny":
        n_streams, n_codebooks = rng.choice(((1, 32), (64, 32), (64, 64), (1, 1), (8, 8)))
        n_chunks = rng.choice((1, 2, 10, 100, 1000))
        payload = rng.choice((0, 0, 1, 3, 4, 8))
        data = ctx_tiny_container(rng, n_chunks, payload, n_streams=n_streams,
                                  n_codebooks=n_codebooks, codebook_size=rng.choice((1024, 65536)),
                                  full=rng.random() < 0.7)
        return f"symbols:ctx_tiny:{n_streams}x{n_codebooks}:{n_chunks}x{payload}B", data
    # CTX chunks of random bytes at (or just over) the payload floor
    if variant == "ctx_short_rows":  # one-frame rows: a model per token, the most work per byte
        n_streams, n_codebooks, per_chunk = 64, 64, rng.choice((1, 1, 2))
        n_chunks, codebook_size = rng.randint(1, 16), 1024
    else:
        n_streams, n_codebooks = rng.choice(((1, 8), (1, 32), (4, 8)))
        per_chunk, n_chunks = rng.choice((64, 750, 4096)), rng.randint(1, 4)
        codebook_size = rng.choice((1024, 1024, 65536))
    n_tokens = n_streams * n_codebooks * per_chunk
    least = -(-n_tokens * max(codebook_size, spec.CTX_TABLE_UNIT) // (8 * spec.CTX_TABLE_UNIT))
    size = least + (-least) % 4 + 4 * rng.choice((0, 0, 1, 2))
    header = raw_header(version_minor=1, n_codebooks=n_codebooks, codebook_size=codebook_size,
                        frames_per_chunk=per_chunk, **_layout(n_streams))
    chunks = [frame_chunk(spec.ChunkType.TOKENS, spec.Coder.CTX, per_chunk, rng.randbytes(size))
              for _ in range(n_chunks)]
    total = n_chunks * per_chunk
    end = end_chunk(n_chunks, total, total * 320, total * 320, rng.randbytes(16))
    return (f"symbols:{variant}:{n_streams}x{n_codebooks}x{per_chunk}:{n_chunks}x{size}B",
            _file(header, chunks, end))


def optional_chunk(chunk_type: int, length: int, fill: str = "zero", rng: random.Random | None = None,
                   *, with_payload: bool = True) -> bytearray:
    """An optional chunk claiming ``length`` payload bytes. ``with_payload``: the payload
    (filled with zeros, 0x01 bytes, fake TOKENS chunk heads, or random bytes) and a valid
    CRC follow; else only the 8-byte framing and a few bytes (a claim the data does not
    back). Built in place: one buffer of the chunk's size (plus the random bytes)."""
    head = struct.pack(spec.CHUNK_HEAD_STRUCT, chunk_type, 0, 0, length)
    if not with_payload:
        return bytearray(head + bytes(4))
    out = bytearray(spec.CHUNK_HEAD_SIZE + length + spec.CHUNK_CRC_SIZE)
    out[: spec.CHUNK_HEAD_SIZE] = head
    payload = np.frombuffer(out, np.uint8)[spec.CHUNK_HEAD_SIZE : spec.CHUNK_HEAD_SIZE + length]
    if fill == "ones":  # every offset looks like a TOKENS chunk with a 16 MiB length
        payload[:] = 1
    elif fill == "heads":  # a zero-length TOKENS chunk (bad CRC) every 12 bytes
        unit = np.frombuffer(struct.pack(spec.CHUNK_HEAD_STRUCT, spec.ChunkType.TOKENS, 0, 1, 0)
                             + bytes(4), np.uint8)
        whole = length - length % len(unit)
        payload[:whole].reshape(-1, len(unit))[:] = unit
        payload[whole:] = unit[: length - whole]
    elif fill == "random":
        payload[:] = np.frombuffer(np.random.default_rng(rng.getrandbits(64)).bytes(length), np.uint8)
    del payload  # (a view of ``out``)
    crc = zlib.crc32(memoryview(out)[: spec.CHUNK_HEAD_SIZE + length])
    out[spec.CHUNK_HEAD_SIZE + length :] = struct.pack("<I", crc)
    return out


def with_optional(data: bytes, chunks: list[tuple[int, bytes]]) -> bytes:
    """``data`` with each chunk inserted before the chunk number given (0: right after the
    header; past the last: before END); chunks are counted in the original file."""
    bounds = [offset for offset, _ in chunk_offsets(data)]
    out, pos = [], 0
    for index, chunk in sorted(chunks, key=lambda item: item[0]):
        at = bounds[min(index, len(bounds) - 1)]
        out.append(data[pos:at])
        out.append(chunk)
        pos = at
    out.append(data[pos:])
    return b"".join(out)


def crafted_optional(rng: random.Random) -> tuple[str, bytes]:
    """Optional chunks (types 0x80..0xFF) of up to 16 MiB and just above, 1-3 of them,
    anywhere in a valid file; some only claim their length. At most ~40 MB in all."""
    seeds = _seeds()
    name = rng.choice(sorted(seeds))
    data = seeds[name]
    n_chunks = len(chunk_offsets(data))
    big = spec.MAX_OPTIONAL_PAYLOAD
    budget = MAX_CRAFTED_BYTES - len(data)
    inserted, parts, kinds = [], [], set()
    for _ in range(rng.randint(1, 3)):
        length = rng.choice((big, big, big + 1, big - 1, big + rng.randint(1, 2**20), 2**32 - 1,
                             rng.randint(0, 65536)))
        with_payload = length <= big + 2**20 and rng.random() < 0.8
        if with_payload and length + spec.CHUNK_FRAMING_SIZE > budget:
            length = rng.randint(0, 4096)
        fill = rng.choice(("zero", "zero", "ones", "heads", "random"))
        chunk = optional_chunk(rng.randint(spec.FIRST_OPTIONAL, 0xFF), length, fill, rng,
                               with_payload=with_payload)
        budget -= len(chunk)
        inserted.append((rng.randint(0, n_chunks), chunk))
        parts.append(f"{length}{'' if with_payload else '(claim)'}/{fill}")
        kinds.add("claim" if not with_payload else "over" if length > big else "within")
    what = "over" if "over" in kinds else "claim" if "claim" in kinds else "within"
    return f"optional:{what}:{name}:{'+'.join(parts)}", with_optional(data, inserted)


# .ecdc (EnCodec's format, tokpack/codecs/encodec/ecdc.py): "ECDC", version 0, big-endian u32
# metadata size, UTF-8 JSON metadata, then the codes.

ECDC_MODELS = ("encodec_24khz", "encodec_48khz", "test_24khz", "test_48khz")


def ecdc_file(metadata: bytes | dict, body: bytes = b"", *, magic: bytes = b"ECDC", version: int = 0,
              size: int | None = None) -> bytes:
    """An .ecdc file: ``metadata`` as JSON (a dict) or raw bytes, its size (or ``size``),
    then ``body``."""
    meta = json.dumps(metadata).encode() if isinstance(metadata, dict) else metadata
    return magic + bytes([version]) + struct.pack(">I", len(meta) if size is None else size) + meta + body


def ecdc_body(rng: random.Random, model: str, audio_length: int, n_codebooks: int) -> bytes:
    """Bit-packed codes (10 bits, LSB first, frame by frame) of ``audio_length`` samples,
    per 1 s segment with its big-endian f32 scale for the 48 kHz models."""
    nprng = np.random.default_rng(rng.getrandbits(32))

    def codes(samples: int) -> bytes:
        frames = -(-samples // 320)
        return coding.pack(nprng.integers(0, 1024, frames * n_codebooks).astype(np.uint16), 10)

    if model.endswith("24khz"):
        return codes(audio_length) if audio_length else b""
    parts = []
    for start in range(0, audio_length, 47_520):
        parts.append(struct.pack(">f", float(nprng.uniform(0.01, 2))) + codes(min(audio_length - start, 48_000)))
    return b"".join(parts)


def nested_json(depth: int, kind: str = "array", closed: bool = True) -> bytes:
    """JSON nested ``depth`` deep: ``[[[...]]]`` / ``{"a":{"a":...}}`` / an object whose
    ``"m"`` is nested arrays; ``closed=False`` leaves the brackets open (still parsed to
    that depth before the end is found)."""
    if kind == "array":
        return b"[" * depth + (b"]" * depth if closed else b"")
    if kind == "object":
        return b'{"a":' * depth + b"1" + (b"}" * depth if closed else b"")
    return b'{"m": ' + b"[" * depth + (b"]" * depth + b', "al": 1, "nc": 2, "lm": false}' if closed else b"")


_BAD_METADATA = (
    b"", b"null", b"[]", b'"encodec_24khz"', b"1e999", b"NaN", b"\xff\xfe{}", b'{"m": "encodec_24khz"',
    b'{"m": 1, "al": 1, "nc": 1, "lm": false}', b'{"al": 1, "nc": 1, "lm": false}',
    b'{"m": "encodec_24khz", "al": 1.5, "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": "24000", "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": true, "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": -1, "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": 1e300, "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": ' + b"9" * 5000 + b', "nc": 2, "lm": false}',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 0, "lm": false}',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 33, "lm": false}',
    b'{"m": "encodec_48khz", "al": 48000, "nc": 17, "lm": false}',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 2, "lm": "yes"}',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 2, "lm": null}',
    b'{"m": "' + b"x" * 60000 + b'", "al": 1, "nc": 1, "lm": false}',
    b'{"m": "encodec_24khz\\u0000", "al": 1, "nc": 1, "lm": false}',
    b'{"m": "encodec_24khz", "m": "nope", "al": 1, "nc": 1, "lm": false}',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 2, "lm": false} trailing',
    b'{"m": "encodec_24khz", "al": 24000, "nc": 2, "lm": false, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
)


def crafted_ecdc(rng: random.Random) -> tuple[str, bytes]:
    """.ecdc files: metadata nested up to ~65,000 deep (arrays, objects, inside "m"; closed
    or not; balanced 60,000-deep nesting is over the 64 KiB metadata limit), other
    malformed metadata, a bad magic / version / size, ``al`` claims of 2^48 and beyond
    with little data, and small valid files (sometimes LM-coded, sometimes with bytes
    after the codes)."""
    variant = rng.choice(("nested", "nested", "malformed", "header", "al_claim", "al_claim", "valid"))
    model = rng.choice(ECDC_MODELS)
    n_codebooks = rng.choice((1, 2, 4, 8, 16))
    if variant == "nested":
        depth = rng.choice((1_100, 5_000, 30_000, 32_000, 60_000, 65_000))
        kind = rng.choice(("array", "object", "in_m"))
        closed = rng.random() < 0.5
        meta = nested_json(depth, kind, closed)
        return f"ecdc:nested:{kind}:{depth}:{'closed' if closed else 'open'}:{len(meta)}B", ecdc_file(meta)
    if variant == "malformed":
        i = rng.randrange(len(_BAD_METADATA))
        return f"ecdc:malformed:{i}", ecdc_file(_BAD_METADATA[i], rng.randbytes(rng.randint(0, 64)))
    if variant == "header":
        meta = {"m": model, "al": 24_000, "nc": n_codebooks, "lm": False}
        how = rng.choice(("magic", "version", "size_over", "size_short", "size_huge", "cut"))
        kw = {"magic": dict(magic=b"ECDD"), "version": dict(version=rng.randint(1, 255)),
              "size_over": dict(size=(1 << 16) + 1), "size_short": dict(size=10),
              "size_huge": dict(size=2**32 - 1), "cut": {}}[how]
        data = ecdc_file(meta, **kw)
        if how == "cut":
            data = data[: rng.randrange(len(data))]
        return f"ecdc:header:{how}", data
    if variant == "al_claim":
        length = rng.choice((2**48, 2**48 - 1, 2**48 + 1, 2**31, 2**63, 10**30, 2**48 - 47_519))
        lm = rng.random() < 0.2 and model.startswith("test")
        body_len = rng.choice((0, 3, 100, 4000))
        meta = {"m": model, "al": length, "nc": n_codebooks, "lm": lm}
        return f"ecdc:al_claim:{model}:{length}:{body_len}B{':lm' if lm else ''}", ecdc_file(meta, rng.randbytes(body_len))
    length = rng.choice((0, 1, 320, 24_000, 47_521, 96_000))
    lm = rng.random() < 0.15 and model.startswith("test")
    body = ecdc_body(rng, model, length, n_codebooks) if not lm else rng.randbytes(rng.randint(0, 300))
    extra = rng.random() < 0.3
    if extra:
        body += rng.randbytes(rng.randint(1, 8))
    meta = {"m": model, "al": length, "nc": n_codebooks, "lm": lm}
    return f"ecdc:valid:{model}:{length}{':lm' if lm else ''}{':extra' if extra else ''}", ecdc_file(meta, body)


_CRAFTERS = {
    "lengths": crafted_lengths,
    "channels": crafted_channels,
    "symbols": crafted_symbols,
    "optional": crafted_optional,
    "ecdc": crafted_ecdc,
}


def crafted(rng: random.Random, family: str | None = None) -> tuple[str, bytes]:
    """One crafted hostile file from ``family`` (default: one of CRAFTED_FAMILIES at
    random); returns its kind (``family:variant:...``) and bytes. ``.ecdc`` files are
    those of the "ecdc" family (they start with b"ECDC")."""
    family = rng.choice(CRAFTED_FAMILIES) if family is None else family
    return _CRAFTERS[family](rng)
