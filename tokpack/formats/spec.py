"""Constants of the tokpack container format, one for one with docs/FORMAT.md.

Nothing here computes anything: if a number below changes, the spec changes with it.
"""

from __future__ import annotations

import enum

FORMAT_DATE = "2026-12-01"

MAGIC = b"\x89TPK\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 4  # the newest minor version this code reads and writes

# Header (section "Header" of FORMAT.md): (field, offset, struct code) in file order.
HEADER_FIELDS = (
    ("magic", 0, "8s"),
    ("version_major", 8, "B"),
    ("version_minor", 9, "B"),
    ("header_size", 10, "H"),
    ("flags", 12, "I"),
    ("model_id", 16, "32s"),
    ("weights_sha256", 48, "32s"),
    ("model_sample_rate", 80, "I"),
    ("hop_length", 84, "I"),
    ("codebook_size", 88, "I"),
    ("n_codebooks", 92, "B"),
    ("model_channels", 93, "B"),
    ("n_streams", 94, "B"),
    ("channel_mode", 95, "B"),
    ("segment_length", 96, "I"),
    ("segment_stride", 100, "I"),
    ("frames_per_chunk", 104, "H"),
    ("resampler", 106, "B"),
    ("reserved_107", 107, "B"),
    ("source_sample_rate", 108, "I"),
    ("source_channels", 112, "H"),
    ("reserved_114", 114, "H"),
    ("source_frames", 116, "Q"),
    ("model_samples", 124, "Q"),
)
HEADER_OFFSET = {name: offset for name, offset, _ in HEADER_FIELDS}
HEADER_STRUCT = "<" + "".join(code for _, _, code in HEADER_FIELDS)
HEADER_PREFIX_SIZE = 12  # magic, version_major, version_minor, header_size
HEADER_FIELDS_SIZE = 132  # v1.0 fields; later minors append theirs before the CRC
HEADER_CRC_SIZE = 4
HEADER_SIZE = HEADER_FIELDS_SIZE + HEADER_CRC_SIZE  # 136: a 1.0 header, the smallest
# Fields version 1.1 appends (after the 1.0 fields, before the CRC).
HEADER_FIELDS_1_1 = (("prior_sha256", 132, "32s"),)
HEADER_STRUCT_1_1 = "<" + "".join(code for _, _, code in HEADER_FIELDS_1_1)
HEADER_SIZE_1_1 = 168
HEADER_OFFSET.update((name, offset) for name, offset, _ in HEADER_FIELDS_1_1)
# Fields version 1.4 appends: the CTX keyframe interval (FORMAT.md "Carried models").
CARRY_MINOR = 4
HEADER_FIELDS_1_4 = (("ctx_keyframe", 164, "H"), ("reserved_166", 166, "H"))
HEADER_STRUCT_1_4 = "<" + "".join(code for _, _, code in HEADER_FIELDS_1_4)
HEADER_SIZE_1_4 = 172
HEADER_OFFSET.update((name, offset) for name, offset, _ in HEADER_FIELDS_1_4)
MAX_CTX_KEYFRAME = 65_535
PRIOR_SHA256_SIZE = 32
UNIFORM_PRIOR_SHA256 = bytes(PRIOR_SHA256_SIZE)  # names the built-in uniform prior
MAX_HEADER_SIZE = 4096

# Header field ranges.
UNKNOWN = 0xFFFF_FFFF_FFFF_FFFF  # source_frames / model_samples not known when written
MAX_LENGTH = 2**48  # largest known source_frames / model_samples
MODEL_ID_SIZE = 32
MODEL_ID_ALPHABET = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
WEIGHTS_SHA256_SIZE = 32
MAX_SAMPLE_RATE = 768_000
MAX_HOP_LENGTH = 65_536
MIN_CODEBOOK_SIZE = 2
MAX_CODEBOOK_SIZE = 65_536
MAX_CODEBOOKS = 64
MAX_MODEL_CHANNELS = 8
MAX_STREAMS = 64
MAX_SEGMENT_LENGTH = 0xFFFF_FFFF
MAX_FRAMES_PER_CHUNK = 65_535
MAX_SOURCE_CHANNELS = 1024
# n_streams * n_codebooks * frames_per_chunk: a reader holds one chunk's tokens at a time,
# so this bounds its memory per chunk (4 MiB of u16 tokens, a few times that while
# unpacking) whatever the header claims. tokpack's largest chunks: 64 streams x 32
# codebooks x 750 frames = 1,536,000 tokens.
MAX_CHUNK_TOKENS = 2**21


class Flags(enum.IntFlag):
    """Header ``flags`` (offset 12), version 1.2 on; other bits are reserved."""

    TOKENS_ONLY = 1  # no model: tokens of a codec tokpack does not run (tokpack pack)
    STREAM_AXIS = 2  # with TOKENS_ONLY: the array had a stream axis, [S, K, T]


KNOWN_FLAGS = int(Flags.TOKENS_ONLY | Flags.STREAM_AXIS)  # an int: ~ of an IntFlag keeps only its bits
FLAGS_MINOR = 2  # the first minor version with flags


class ChannelMode(enum.IntEnum):
    """How source channels become model channels and token streams (header byte 95)."""

    AS_IS = 0
    DOWNMIX = 1
    UPMIX = 2
    SPLIT = 3
    FOLD_STEREO = 4


class Resampler(enum.IntEnum):
    """How the source was brought to the model rate (header byte 106)."""

    NONE = 0
    SINC_HANN = 1


# Chunk framing: type u8, param u8, count u16, payload_length u32, payload, crc32 u32.
CHUNK_HEAD_STRUCT = "<BBHI"
CHUNK_HEAD_SIZE = 8
CHUNK_CRC_SIZE = 4
CHUNK_FRAMING_SIZE = CHUNK_HEAD_SIZE + CHUNK_CRC_SIZE


class ChunkType(enum.IntEnum):
    """Chunk types defined by this version; 0x03-0x7F are reserved critical types."""

    TOKENS = 0x01
    END = 0x02


FIRST_RESERVED_CRITICAL = 0x03
FIRST_OPTIONAL = 0x80  # 0x80-0xFF: a reader that does not know the type skips the chunk
MAX_OPTIONAL_PAYLOAD = 16 * 2**20

# Live containers (version 1.3, FORMAT.md "Live containers"): optional chunks that a reader
# of 1.3 or later interprets in a 1.3 or later file, and earlier readers skip.
LIVE_MINOR = 3
LIVE_CHUNK = 0x80  # right after the header, no payload: a LAST chunk will come
LAST_CHUNK = 0x81  # after every TOKENS chunk but the last: END's two lengths, in advance
LAST_STRUCT = "<QQ"  # source_frames, model_samples
LAST_PAYLOAD_SIZE = 16
LAST_OFFSET = {"source_frames": 0, "model_samples": 8}
TOKENS_PAYLOAD_SLACK = 64  # plus R/256: zstd's worst-case expansion of R bytes
SEGMENT_COUNT_STRUCT = "<H"
SEGMENT_COUNT_SIZE = 2
SEGMENT_FRAMES_SIZE = 2
SCALE_SIZE = 4

# END payload: n_chunks u32, total_frames u64, source_frames u64, model_samples u64,
# token_digest 16 bytes.
END_STRUCT = "<IQQQ16s"
END_PAYLOAD_SIZE = 44
END_FIELDS = (
    ("n_chunks", 0),
    ("total_frames", 4),
    ("source_frames", 12),
    ("model_samples", 20),
    ("token_digest", 28),
)
END_OFFSET = dict(END_FIELDS)
END_CHUNK_SIZE = CHUNK_FRAMING_SIZE + END_PAYLOAD_SIZE
DIGEST_SIZE = 16  # hashlib.blake2b(digest_size=16)


class Coder(enum.IntEnum):
    """Token coders: the param byte of a TOKENS chunk."""

    PACK = 0
    PACK_ZSTD = 1
    PLANES_ZSTD = 2
    CTX = 3
    CTX_CARRY = 4  # version 1.4: CTX with the models carried on from the previous chunk


ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = 19

# CTX coder (FORMAT.md "CTX coder")
CTX_PRECISION = 24  # frequencies of each model sum to 2^24 (constriction's default precision)
CTX_BLOCK = 16  # frames coded with one state of the adaptive counts
# Decoding a CTX symbol costs a fixed amount plus work proportional to the model's table
# (codebook_size entries), measured 2-11 us at 1024 codes and 38 us at 65,536 on one core.
# So that work per payload byte is bounded, a CTX payload holds at least
# ceil(slots * max(codebook_size, CTX_TABLE_UNIT) / (8 * CTX_TABLE_UNIT)) bytes, where slots
# counts every row's blocks of CTX_BLOCK frames as full (a block costs a model of the whole
# table): one bit per token up to 1024 codes, proportionally more above (real codec tokens
# cost 5-10 bits). A writer codes a chunk whose CTX bytes would be fewer with another coder.
CTX_TABLE_UNIT = 1024
# Coder 4 halves a row's counts (rounding up) after a block that brings its mass above this.
CTX_HALVE_ABOVE = 2048

# Prior files (FORMAT.md "Prior files")
PRIOR_MAGIC = b"\x89TPP\r\n\x1a\n"
PRIOR_VERSION = 1
PRIOR_ONE = 1 << 16  # every prior table sums to this
PRIOR_MIX_ONE = 256  # a codebook's mix weight is out of this
PRIOR_MAX_STRENGTH = 1 << 20
PRIOR_MAX_NEIGHBOURS = 64
PRIOR_MAX_CONTENT = 64 * 2**20  # bytes of tables, uncompressed
UNIFORM_PRIOR_ID = "uniform"  # the built-in prior (all-zero prior_sha256); no file has it
UNIFORM_PRIOR_STRENGTH = 32
# The generic prior of m codes (FORMAT.md "Generic priors"): built in, needs no model; uniform
# with strength max(1, m // GENERIC_PRIOR_DIVISOR); prior_sha256 = SHA-256 of GENERIC_PRIOR_NAME
# with m in decimal (ASCII).
GENERIC_PRIOR_ID = "generic"
GENERIC_PRIOR_DIVISOR = 8
GENERIC_PRIOR_NAME = "tokpack generic CTX prior, {} codes"
