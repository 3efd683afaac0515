"""The container header: a validated dataclass and its 136-byte encoding."""

from __future__ import annotations

import dataclasses
import math
import operator
import struct
import zlib

from tokpack.errors import (
    BadMagic,
    ChecksumMismatch,
    FieldOutOfRange,
    FormatError,
    Truncated,
    UnsupportedFeature,
    UnsupportedVersion,
)
from tokpack.formats import spec

_INT_RANGES = {
    "model_sample_rate": (1, spec.MAX_SAMPLE_RATE),
    "hop_length": (1, spec.MAX_HOP_LENGTH),
    "codebook_size": (spec.MIN_CODEBOOK_SIZE, spec.MAX_CODEBOOK_SIZE),
    "n_codebooks": (1, spec.MAX_CODEBOOKS),
    "model_channels": (1, spec.MAX_MODEL_CHANNELS),
    "n_streams": (1, spec.MAX_STREAMS),
    "channel_mode": (0, max(spec.ChannelMode)),
    "segment_length": (0, spec.MAX_SEGMENT_LENGTH),
    "segment_stride": (0, spec.MAX_SEGMENT_LENGTH),
    "frames_per_chunk": (1, spec.MAX_FRAMES_PER_CHUNK),
    "resampler": (0, max(spec.Resampler)),
    "source_sample_rate": (1, spec.MAX_SAMPLE_RATE),
    "source_channels": (1, spec.MAX_SOURCE_CHANNELS),
    "version_minor": (0, 255),
}


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


def _out_of_range(field: str, message: str) -> FieldOutOfRange:
    return FieldOutOfRange(message, offset=spec.HEADER_OFFSET[field], field=field)


@dataclasses.dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the tokens; validated on construction."""

    model_id: str
    weights_sha256: bytes
    model_sample_rate: int
    hop_length: int
    codebook_size: int
    n_codebooks: int
    model_channels: int
    source_sample_rate: int
    source_channels: int
    n_streams: int = 1
    channel_mode: int = spec.ChannelMode.AS_IS
    segment_length: int = 0
    segment_stride: int = 0
    frames_per_chunk: int = 750
    resampler: int = spec.Resampler.NONE
    source_frames: int | None = None
    model_samples: int | None = None
    version_minor: int = 0
    prior_sha256: bytes | None = None  # version 1.1 on; zeros name the uniform prior
    flags: int = 0  # version 1.2 on: spec.Flags
    ctx_keyframe: int = 1  # version 1.4 on: chunks per keyframe of the CTX models

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_prior()
        for name, (low, high) in _INT_RANGES.items():
            value = _as_int(getattr(self, name), name)
            if not low <= value <= high:
                raise _out_of_range(name, f"{value} is out of range {low}..{high}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "channel_mode", spec.ChannelMode(self.channel_mode))
        object.__setattr__(self, "resampler", spec.Resampler(self.resampler))
        for name in ("source_frames", "model_samples"):
            value = getattr(self, name)
            if value is not None:
                value = _as_int(value, name)
                if not 0 <= value <= spec.MAX_LENGTH:
                    raise _out_of_range(name, f"{value} is out of range 0..2^48 (or unknown)")
                object.__setattr__(self, name, value)
        self._check_consistency()
        self._check_flags()
        self._check_keyframe()

    def _check_keyframe(self) -> None:
        value = _as_int(self.ctx_keyframe, "ctx_keyframe")
        if not 1 <= value <= spec.MAX_CTX_KEYFRAME:
            raise _out_of_range("ctx_keyframe",
                                f"{value} is out of range 1..{spec.MAX_CTX_KEYFRAME}")
        if value != 1 and self.version_minor < spec.CARRY_MINOR:
            raise _out_of_range("ctx_keyframe", f"{value} needs version 1.{spec.CARRY_MINOR} or "
                                                "later (before it, every chunk stands alone)")
        object.__setattr__(self, "ctx_keyframe", value)

    def _check_flags(self) -> None:
        flags = _as_int(self.flags, "flags")
        if flags and self.version_minor < spec.FLAGS_MINOR:
            raise _out_of_range("flags", f"{flags:#x} needs version 1.{spec.FLAGS_MINOR} or later "
                                         "(reserved before, must be 0)")
        unknown = flags & ~spec.KNOWN_FLAGS
        if unknown:
            raise UnsupportedFeature(
                f"flags bit(s) {unknown:#x} are not known to this reader (a newer writer's feature)",
                offset=spec.HEADER_OFFSET["flags"], field="flags")
        flags = spec.Flags(flags)
        object.__setattr__(self, "flags", flags)
        if not flags:
            return
        if not flags & spec.Flags.TOKENS_ONLY:
            raise _out_of_range("flags", "STREAM_AXIS needs TOKENS_ONLY")
        rules = (
            (self.segment_length == 0, "segment_length 0"),
            (self.model_channels == 1, "model_channels 1"),
            (self.resampler == spec.Resampler.NONE, "resampler NONE"),
            (self.source_channels == self.n_streams, "source_channels == n_streams"),
            (self.source_frames is None or self.model_samples is None
             or self.source_frames == self.model_samples, "source_frames == model_samples"),
            (self.model_samples is None or self.model_samples % self.hop_length == 0,
             "model_samples a multiple of hop_length"),
        )
        broken = [rule for holds, rule in rules if not holds]
        if broken:
            raise _out_of_range("flags", "a tokens-only header needs " + ", ".join(broken))

    @property
    def tokens_only(self) -> bool:
        """No model: tokens of a codec tokpack does not run (``tokpack pack``)."""
        return bool(self.flags & spec.Flags.TOKENS_ONLY)

    def _check_identity(self) -> None:
        model_id = self.model_id
        if not isinstance(model_id, str) or not 1 <= len(model_id) <= spec.MODEL_ID_SIZE:
            raise _out_of_range("model_id", f"{model_id!r} is not a string of 1..32 characters")
        if not set(model_id.encode("utf-8")) <= spec.MODEL_ID_ALPHABET:
            raise _out_of_range("model_id", f"{model_id!r} has characters outside [a-z0-9_.-]")
        digest = self.weights_sha256
        if not isinstance(digest, bytes) or len(digest) != spec.WEIGHTS_SHA256_SIZE:
            raise _out_of_range("weights_sha256", "must be 32 bytes")

    def _check_prior(self) -> None:
        digest = self.prior_sha256
        if self.version_minor == 0:
            if digest is not None:
                raise _out_of_range("version_minor", "prior_sha256 needs version 1.1 or later")
            return
        if digest is None:
            object.__setattr__(self, "prior_sha256", spec.UNIFORM_PRIOR_SHA256)
        elif not isinstance(digest, bytes) or len(digest) != spec.PRIOR_SHA256_SIZE:
            raise _out_of_range("prior_sha256", "must be 32 bytes")

    @property
    def header_size(self) -> int:
        """Bytes of this header as written: 136 for version 1.0, 168 from 1.1 on, 172
        from 1.4 on."""
        if self.version_minor >= spec.CARRY_MINOR:
            return spec.HEADER_SIZE_1_4
        return spec.HEADER_SIZE if self.version_minor == 0 else spec.HEADER_SIZE_1_1

    def _check_consistency(self) -> None:
        mode = self.channel_mode
        required = {
            spec.ChannelMode.AS_IS: (
                self.source_channels == self.model_channels and self.n_streams == 1,
                "as-is needs source_channels == model_channels and n_streams == 1",
            ),
            spec.ChannelMode.DOWNMIX: (
                self.model_channels == 1 and self.n_streams == 1,
                "downmix needs model_channels == 1 and n_streams == 1",
            ),
            spec.ChannelMode.UPMIX: (
                self.source_channels == 1 and self.n_streams == 1,
                "upmix needs source_channels == 1 and n_streams == 1",
            ),
            spec.ChannelMode.SPLIT: (
                self.model_channels == 1 and self.n_streams == self.source_channels,
                "split needs model_channels == 1 and n_streams == source_channels",
            ),
            spec.ChannelMode.FOLD_STEREO: (
                self.model_channels == 2 and self.source_channels >= 2 and self.n_streams == 1,
                "fold-stereo needs model_channels == 2, source_channels >= 2 and n_streams == 1",
            ),
        }
        holds, rule = required[mode]
        if not holds:
            raise _out_of_range(
                "channel_mode",
                f"{mode.name} with {self.source_channels} source channel(s), "
                f"{self.model_channels} model channel(s), {self.n_streams} stream(s): {rule}",
            )
        tokens = self.n_streams * self.n_codebooks * self.frames_per_chunk
        if tokens > spec.MAX_CHUNK_TOKENS:
            raise _out_of_range(
                "frames_per_chunk",
                f"{self.n_streams} stream(s) x {self.n_codebooks} codebook(s) x "
                f"{self.frames_per_chunk} frames is {tokens} tokens a chunk, more than "
                f"the {spec.MAX_CHUNK_TOKENS} a reader holds at once",
            )
        if (
            self.source_frames is not None
            and self.model_samples is not None
            and not lengths_agree(self.source_frames, self.model_samples,
                                  self.source_sample_rate, self.model_sample_rate)
        ):
            raise _out_of_range(
                "source_frames",
                f"{self.source_frames} frames at {self.source_sample_rate} Hz is longer "
                f"than the {self.model_samples} model samples at {self.model_sample_rate} Hz",
            )
        same_rate = self.source_sample_rate == self.model_sample_rate
        if same_rate != (self.resampler == spec.Resampler.NONE):
            raise _out_of_range(
                "resampler",
                f"{self.resampler.name} from {self.source_sample_rate} Hz to "
                f"{self.model_sample_rate} Hz: must be NONE exactly when the rates are equal",
            )
        if self.segment_length == 0:
            if self.segment_stride != 0:
                raise _out_of_range("segment_stride", "must be 0 when segment_length is 0")
            return
        if not 1 <= self.segment_stride <= self.segment_length:
            raise _out_of_range(
                "segment_stride",
                f"{self.segment_stride} is out of range 1..segment_length ({self.segment_length})",
            )
        if self.frames_per_chunk % self.segment_frames:
            raise _out_of_range(
                "frames_per_chunk",
                f"{self.frames_per_chunk} is not a multiple of "
                f"segment_frames ({self.segment_frames})",
            )

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""
        return self.model_sample_rate / self.hop_length

    @property
    def bits_per_code(self) -> int:
        """ceil(log2(codebook_size)): the bits one token takes when packed."""
        return (self.codebook_size - 1).bit_length()

    @property
    def bandwidth_bps(self) -> float:
        return self.n_codebooks * self.bits_per_code * self.frame_rate

    @property
    def segmented(self) -> bool:
        return self.segment_length > 0

    @property
    def segment_frames(self) -> int:
        """Frames of a full segment (0 if unsegmented)."""
        return math.ceil(self.segment_length / self.hop_length)

    @property
    def segments_per_chunk(self) -> int:
        """Segments in every TOKENS chunk but the last (0 if unsegmented)."""
        return self.frames_per_chunk // self.segment_frames if self.segmented else 0

    @property
    def source_duration_s(self) -> float | None:
        if self.source_frames is None:
            return None
        return self.source_frames / self.source_sample_rate

    def to_bytes(self) -> bytes:
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values.update(
            magic=spec.MAGIC,
            version_major=spec.VERSION_MAJOR,
            header_size=self.header_size,
            flags=int(self.flags),
            model_id=self.model_id.encode("ascii"),
            reserved_107=0,
            reserved_114=0,
            source_frames=spec.UNKNOWN if self.source_frames is None else self.source_frames,
            model_samples=spec.UNKNOWN if self.model_samples is None else self.model_samples,
        )
        body = struct.pack(spec.HEADER_STRUCT, *(values[name] for name, _, _ in spec.HEADER_FIELDS))
        if self.version_minor:
            body += struct.pack(spec.HEADER_STRUCT_1_1, self.prior_sha256)
        if self.version_minor >= spec.CARRY_MINOR:
            body += struct.pack(spec.HEADER_STRUCT_1_4, self.ctx_keyframe, 0)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, path: str | None = None) -> Header:
        """Parse and validate a header from the start of ``data`` (extra bytes are ignored)."""
        try:
            header_size = check_prefix(data)
            if len(data) < header_size:
                raise Truncated(
                    f"data ends after {len(data)} of the header's {header_size} bytes",
                    offset=len(data),
                    field="header",
                )
            return _parse(bytes(data[:header_size]), header_size)
        except FormatError as error:
            error.path = path
            raise


def lengths_agree(source_frames: int, model_samples: int, source_rate: int, model_rate: int) -> bool:
    """The reader rule on the two lengths: the source is no longer than the model-rate
    signal, give or take one model sample (``source_frames * model_rate <= (model_samples
    + 1) * source_rate``), so a decoder never pads more than that with silence."""
    return source_frames * model_rate <= (model_samples + 1) * source_rate


def _as_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise _out_of_range(name, f"{value!r} is not an integer")
    try:
        return operator.index(value)
    except TypeError:
        raise _out_of_range(name, f"{value!r} is not an integer") from None


#: what a file given by mistake starts with: (prefix, what it is, what to do instead)
_ENCODE = "did you mean `tokpack encode`?"
OTHER_MAGICS = (
    (b"RIFF", "a WAV file", _ENCODE),
    (b"RIFX", "a WAV file", _ENCODE),
    (b"RF64", "an RF64 WAV file", _ENCODE),
    (b"fLaC", "a FLAC file", _ENCODE),
    (b"OggS", "an Ogg file", _ENCODE),
    (b"FORM", "an AIFF file", _ENCODE),
    (b"ID3", "an MP3 file", _ENCODE),
    (spec.PRIOR_MAGIC, "a CTX prior (.tpp)", "give it to --prior"),
)


def check_prefix(data: bytes) -> int:
    """Validate magic, major version and header_size (the first 12 bytes); return header_size."""
    magic = bytes(data[: len(spec.MAGIC)])
    if magic != spec.MAGIC[: len(magic)]:
        for prefix, what, advice in OTHER_MAGICS:
            if magic.startswith(prefix):
                raise BadMagic(f"this looks like {what}, not a token container: {advice}",
                               offset=0, field="magic")
        hint = (
            "the file was probably transferred in text mode (line endings converted)"
            if magic[1:4] == spec.MAGIC[1:4]
            else "not a tokpack container"
        )
        raise BadMagic(
            f"{hint} (expected {_hex(spec.MAGIC)}, got {_hex(magic)})", offset=0, field="magic"
        )
    if len(data) < spec.HEADER_PREFIX_SIZE:
        raise Truncated(
            f"data ends after {len(data)} bytes, inside the header",
            offset=len(data),
            field="header",
        )
    major, minor, header_size = struct.unpack_from("<BBH", data, len(spec.MAGIC))
    if major != spec.VERSION_MAJOR:
        raise UnsupportedVersion(
            f"format version {major}.{minor} is not supported "
            f"(this reader reads {spec.VERSION_MAJOR}.x)",
            offset=spec.HEADER_OFFSET["version_major"],
            field="version_major",
        )
    if not spec.HEADER_SIZE <= header_size <= spec.MAX_HEADER_SIZE:
        raise FieldOutOfRange(
            f"{header_size} is out of range {spec.HEADER_SIZE}..{spec.MAX_HEADER_SIZE}",
            offset=spec.HEADER_OFFSET["header_size"],
            field="header_size",
        )
    return header_size


def _parse(data: bytes, header_size: int) -> Header:
    crc_offset = header_size - spec.HEADER_CRC_SIZE
    (stored,) = struct.unpack_from("<I", data, crc_offset)
    computed = zlib.crc32(data[:crc_offset])
    if stored != computed:
        raise ChecksumMismatch(
            f"header is corrupt (stored 0x{stored:08x}, computed 0x{computed:08x})",
            offset=crc_offset,
            field="header_crc32",
        )
    fields = dict(
        zip(
            (name for name, _, _ in spec.HEADER_FIELDS),
            struct.unpack_from(spec.HEADER_STRUCT, data),
            strict=True,
        )
    )
    for name in ("reserved_107", "reserved_114"):
        if fields[name]:
            raise _out_of_range(name, f"reserved, must be 0 (got {fields[name]:#x})")
    raw_id = fields["model_id"]
    name_bytes = raw_id.rstrip(b"\0")
    if b"\0" in name_bytes or not set(name_bytes) <= spec.MODEL_ID_ALPHABET or not name_bytes:
        raise _out_of_range(
            "model_id",
            f"must be 1..32 characters of [a-z0-9_.-] padded with NUL (got {_hex(raw_id)})",
        )
    for name in ("source_frames", "model_samples"):
        if fields[name] == spec.UNKNOWN:
            fields[name] = None
    minor = fields["version_minor"]
    least = (spec.HEADER_SIZE_1_4 if minor >= spec.CARRY_MINOR
             else spec.HEADER_SIZE_1_1 if minor >= 1 else spec.HEADER_SIZE)
    if header_size < least:
        raise FieldOutOfRange(
            f"{header_size} is too small for version 1.{minor} (at least {least})",
            offset=spec.HEADER_OFFSET["header_size"],
            field="header_size",
        )
    if minor >= 1:
        (fields["prior_sha256"],) = struct.unpack_from(
            spec.HEADER_STRUCT_1_1, data, spec.HEADER_OFFSET["prior_sha256"]
        )
    if minor >= spec.CARRY_MINOR:
        keyframe, reserved = struct.unpack_from(spec.HEADER_STRUCT_1_4, data,
                                                spec.HEADER_OFFSET["ctx_keyframe"])
        if reserved:
            raise _out_of_range("reserved_166", f"reserved, must be 0 (got {reserved:#x})")
        fields["ctx_keyframe"] = keyframe
    fields["model_id"] = name_bytes.decode("ascii")
    init = {f.name for f in dataclasses.fields(Header)}
    return Header(**{name: value for name, value in fields.items() if name in init})
