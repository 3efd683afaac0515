"""A fast, seeded subset of the container fuzzing (the long run: scripts/fuzz_container.py).

Mutated files (random damage) and crafted hostile files with valid CRCs (mutate.crafted:
length claims, channel claims, symbol-count bombs, oversized optional chunks, hostile
.ecdc metadata); then, per family, the outcome the format fixes for a crafted file.
"""

import io
import random
import signal
import time

import pytest

from mutate import (
    CRAFTED_FAMILIES,
    _BAD_METADATA,
    channel_container,
    chunk_offsets,
    crafted,
    ctx_tiny_container,
    ecdc_body,
    ecdc_file,
    end_chunk,
    mutate,
    nested_json,
    optional_chunk,
    raw_header,
    seed_containers,
    set_end_fields,
    set_header_fields,
    token_bomb_header,
    with_optional,
    zstd_bomb_container,
)
from tokpack.errors import FieldOutOfRange, FormatError, TokpackError, Truncated
from tokpack.formats import read_container, spec
from tokpack.formats.chunk import frame_chunk
from tokpack.formats.salvage import salvage

SEEDS = seed_containers()
TIME_LIMIT_S = 2.0  # per reader call, as in scripts/fuzz_container.py


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_are_valid(name):
    read_container(io.BytesIO(SEEDS[name]))


@pytest.mark.parametrize("seed", range(40))
def test_mutated_containers_raise_only_format_errors(seed):
    rng = random.Random(seed)
    for name in sorted(SEEDS):
        for _ in range(10):
            kind, data = mutate(SEEDS[name], rng)
            for read in (read_container, salvage):
                try:
                    read(io.BytesIO(data))
                except FormatError:
                    pass


# --- crafted files: only FormatError (.ecdc: TokpackError) escapes, each call < 2 s -----


class _Deadline(BaseException):
    """Interrupts a call past the time limit (a BaseException: the code under test has
    ``except Exception`` clauses that must not swallow it)."""


def _interrupt(signum, frame):
    raise _Deadline()


def timed(read, data: bytes, allowed=FormatError, limit: float = TIME_LIMIT_S):
    """(outcome, seconds) of ``read(BytesIO(data))``; the outcome is "accepted" or the
    allowed exception. Any other exception propagates; a call still running at ``limit``
    is interrupted, so a slow case costs the test at most ``limit``."""
    previous = signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, limit + 0.05)
    t0 = time.perf_counter()
    try:
        read(io.BytesIO(data))
        outcome = "accepted"
    except allowed as error:
        outcome = error
    except _Deadline:
        outcome = "interrupted"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, time.perf_counter() - t0


def read_ecdc_info(f):
    from tokpack.codecs.encodec.ecdc import read_ecdc_info as read

    return read(f)


def iterate_ecdc(f):
    """Every chunk of an EcdcReader; an LM-coded file only up to its header (no LM load
    in the fast suite: the long run covers them)."""
    from tokpack.codecs.encodec.ecdc import EcdcReader

    if read_ecdc_info(io.BytesIO(f.getvalue())).use_lm:
        return
    with EcdcReader(f) as reader:
        for _ in reader:
            pass


@pytest.fixture(scope="module")
def encodec_imported():
    """encodec (and torch) imported once, outside the timed calls."""
    import encodec.binary  # noqa: F401


def readers(family: str):
    if family == "ecdc":
        return (("read_ecdc_info", read_ecdc_info), ("EcdcReader", iterate_ecdc)), TokpackError
    return (("read_container", read_container), ("salvage", salvage)), FormatError


def _crafted_params():
    for family in CRAFTED_FAMILIES:
        for seed in range(6):
            yield pytest.param(family, seed, id=f"{family}-{seed}")


MEMORY_RISE_LIMIT = 256 * 2**20  # what one case may add to the process's peak RSS


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _rss_rise(fn) -> tuple[object, int]:
    """``fn()`` and how far the peak RSS rose above the RSS before it (the peak is reset
    first through /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    result = fn()
    return result, (_status_kib("VmHWM") - before) * 1024


@pytest.mark.parametrize("family, seed", list(_crafted_params()))
def test_crafted_files_raise_only_format_errors_quickly(family, seed, request):
    if family == "ecdc":
        request.getfixturevalue("encodec_imported")
    kind, data = crafted(random.Random(f"crafted-test:{family}:{seed}"), family)
    calls, allowed = readers(family)
    for name, read in calls:
        (outcome, elapsed), rise = _rss_rise(lambda: timed(read, data, allowed))
        assert outcome != "interrupted" and elapsed < TIME_LIMIT_S, (
            f"{kind} ({len(data)} bytes): {name} took {elapsed:.2f} s ({outcome})")
        assert rise <= MEMORY_RISE_LIMIT, f"{kind} ({len(data)} bytes): {name} took {rise / 2**20:.0f} MiB"


# --- lengths ------------------------------------------------------------------------


def _end_payload(data: bytes) -> int:
    return len(data) - spec.END_CHUNK_SIZE + spec.CHUNK_HEAD_SIZE


def _unknown_lengths(data: bytes) -> bytes:
    return set_header_fields(data, source_frames=spec.UNKNOWN, model_samples=spec.UNKNOWN)


def _raises(read, data: bytes, error=FieldOutOfRange):
    with pytest.raises(error) as info:
        read(io.BytesIO(data))
    return info.value


@pytest.mark.parametrize("claim", [2**48, 2**48 - 1, 2**31, 2**32])
def test_end_model_samples_beyond_the_frames_is_rejected(claim):
    data = set_end_fields(_unknown_lengths(SEEDS["plain_pack"]), model_samples=claim)
    error = _raises(read_container, data)
    assert (error.field, error.offset) == ("model_samples", _end_payload(data) + 20)
    found = salvage(io.BytesIO(data))  # keeps END, but never pads past the frames
    assert found.trailer.model_samples == claim
    assert found.extent().model_samples == 130 * 320


@pytest.mark.parametrize("claim", [2**48 + 1, 2**63, spec.UNKNOWN - 1])
def test_end_length_out_of_range(claim):
    for field in ("source_frames", "model_samples"):
        data = set_end_fields(_unknown_lengths(SEEDS["plain_pack"]), **{field: claim})
        error = _raises(read_container, data)
        assert (error.field, error.offset) == (field, _end_payload(data) + (12 if field == "source_frames" else 20))


def test_end_source_frames_beyond_model_samples_is_rejected():
    data = set_end_fields(_unknown_lengths(SEEDS["plain_pack"]), source_frames=2**48)
    error = _raises(read_container, data)
    assert (error.field, error.offset) == ("source_frames", _end_payload(data) + 12)


@pytest.mark.parametrize("field, claim, expected", [
    ("model_samples", 2**48 + 1, "model_samples"),  # out of range
    ("model_samples", 2**63, "model_samples"),
    ("source_frames", 2**48 + 1, "source_frames"),
    ("source_frames", 2**48, "source_frames"),  # rule 6 against the header's model_samples
    ("source_frames", 2**31, "source_frames"),
])
def test_header_length_claims(field, claim, expected):
    data = set_header_fields(SEEDS["plain_pack"], **{field: claim})
    for read in (read_container, salvage):
        error = _raises(read, data)
        assert (error.field, error.offset) == (expected, spec.HEADER_OFFSET[expected])


def test_header_and_end_agreeing_on_2_48_samples_is_rejected():
    values = dict(source_frames=2**48 * 24_000 // 44_100, model_samples=2**48)  # rule 6 holds
    data = set_end_fields(set_header_fields(SEEDS["plain_pack"], **values), **values)
    error = _raises(read_container, data)
    assert (error.field, error.offset) == ("model_samples", _end_payload(data) + 20)


# --- channels -----------------------------------------------------------------------


def test_downmix_of_1024_channels_at_768_khz_reads_back():
    data = channel_container(random.Random(3), "downmix", 768_000, frames=50)
    container = read_container(io.BytesIO(data))
    h = container.header
    assert (h.channel_mode, h.source_channels, h.source_sample_rate, h.resampler) == (
        spec.ChannelMode.DOWNMIX, 1024, 768_000, spec.Resampler.SINC_HANN)
    assert container.tokens.shape[::2] == (1, 50)
    found = salvage(io.BytesIO(data))
    assert not found.damage and sum(c.n_frames for c in found.chunks) == 50


@pytest.mark.parametrize("mode", ["fold", "split", "upmix", "as_is"])
def test_extreme_channel_layouts_read_back(mode):
    data = channel_container(random.Random(4), mode, 768_000, frames=20)
    assert read_container(io.BytesIO(data)).tokens.shape[2] == 20


@pytest.mark.parametrize("field, value, expected", [
    ("source_channels", 1025, "source_channels"),
    ("source_channels", 65535, "source_channels"),
    ("source_sample_rate", 768_001, "source_sample_rate"),
    ("source_sample_rate", 0, "source_sample_rate"),
    ("resampler", 0, "resampler"),  # 768 kHz to 24 kHz needs SINC_HANN
    ("model_channels", 2, "channel_mode"),  # DOWNMIX needs one model channel
])
def test_channel_claims_out_of_range(field, value, expected):
    data = set_header_fields(channel_container(random.Random(5), "downmix", 768_000, frames=10),
                             **{field: value})
    for read in (read_container, salvage):
        error = _raises(read, data)
        assert (error.field, error.offset) == (expected, spec.HEADER_OFFSET[expected])


# --- symbol-count bombs ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 32, 65535), (64, 64, 513), (1, 64, 32769), (2, 32, 32769)])
def test_header_over_2_21_tokens_a_chunk_is_rejected(shape):
    chunks = [frame_chunk(spec.ChunkType.TOKENS, spec.Coder.PACK_ZSTD, shape[2], bytes(8))] * 3
    data = token_bomb_header(*shape) + b"".join(chunks) + end_chunk(3, 3 * shape[2], 0, 0, bytes(16))
    for read in (read_container, salvage):
        error = _raises(read, data)
        assert (error.field, error.offset) == ("frames_per_chunk", spec.HEADER_OFFSET["frames_per_chunk"])


def test_constant_zstd_chunks_at_the_2_21_limit_are_valid():
    data = zstd_bomb_container(1, n_streams=64, n_codebooks=64, frames_per_chunk=512)
    assert len(data) < 1000  # 2^21 tokens in a few hundred bytes
    outcome, elapsed = timed(read_container, data)
    assert outcome == "accepted" and elapsed < TIME_LIMIT_S


_EXACT = 2 * 16 * 65535 * 2  # PACK bytes of a 2 x 16 x 65535 chunk of 16-bit tokens


@pytest.mark.parametrize("declared, content", [
    (2**40, 1 << 17), (2**63, 0), (2**64 - 1, 1 << 17), (2**64 - 2, 1 << 17),
    (2**32, 2**20),  # a 4 GiB frame takes 32,768 RLE blocks (128 KiB); this one stops after 8
    (-1, 1 << 17),  # no content size declared
    (2 * _EXACT, 2 * _EXACT),  # twice the chunk's size, and actually that long
    (_EXACT + 1, _EXACT + 1),
    (_EXACT, _EXACT + 1),  # declares the right size, holds more
    (_EXACT, _EXACT - 1),
])
def test_zstd_frame_declaring_another_size_is_rejected(declared, content):
    data = zstd_bomb_container(1, n_streams=2, n_codebooks=16, frames_per_chunk=65535,
                               declared=declared, content=content)
    outcome, elapsed = timed(read_container, data)
    assert isinstance(outcome, FieldOutOfRange) and elapsed < TIME_LIMIT_S
    assert (outcome.field, outcome.offset) == ("tokens", spec.HEADER_SIZE + spec.CHUNK_HEAD_SIZE)


@pytest.mark.parametrize("n_chunks", [1, 1000])
@pytest.mark.parametrize("payload", [0, 3])
def test_ctx_chunks_under_the_floor_are_rejected(n_chunks, payload):
    data = ctx_tiny_container(random.Random(6), n_chunks, payload)
    error = _raises(read_container, data)
    header_size = spec.HEADER_SIZE_1_1
    assert (error.field, error.offset) == ("payload_length", header_size + 4)
    outcome, elapsed = timed(salvage, data)
    assert outcome == "accepted" and elapsed < TIME_LIMIT_S
    found = salvage(io.BytesIO(data))  # every chunk lost, one by one
    assert not found.chunks and sum(d.n_chunks for d in found.damage) == n_chunks


def _ctx_short_rows(n_chunks: int) -> bytes:
    """64 streams x 64 codebooks x 1 frame a chunk (every token a row of its own), CTX
    chunks of random bytes at the payload floor (512 bytes for 4096 tokens)."""
    rng = random.Random(7)
    header = raw_header(version_minor=1, n_codebooks=64, frames_per_chunk=1, n_streams=64,
                        channel_mode=spec.ChannelMode.SPLIT, source_channels=64)
    chunks = [frame_chunk(spec.ChunkType.TOKENS, spec.Coder.CTX, 1, rng.randbytes(512))
              for _ in range(n_chunks)]
    return header + b"".join(chunks) + end_chunk(n_chunks, n_chunks, 320 * n_chunks, 320 * n_chunks, bytes(16))


def test_ctx_short_rows_strict_reader_stops_at_the_first_chunk():
    outcome, elapsed = timed(read_container, _ctx_short_rows(40))
    assert isinstance(outcome, FormatError) and elapsed < TIME_LIMIT_S


def test_salvage_of_ctx_short_rows_is_fast():
    outcome, elapsed = timed(salvage, _ctx_short_rows(40))
    assert outcome != "interrupted" and elapsed < TIME_LIMIT_S


# --- oversized optional chunks -------------------------------------------------------


def test_optional_chunks_of_16_mib_are_skipped():
    big = spec.MAX_OPTIONAL_PAYLOAD
    data = with_optional(SEEDS["plain_zstd"], [(0, optional_chunk(0x80, big)),
                                               (2, optional_chunk(0xFF, big, "random", random.Random(8)))])
    for read in (read_container, salvage):
        outcome, elapsed = timed(read, data)
        assert outcome != "interrupted" and not isinstance(outcome, Exception)
        assert elapsed < TIME_LIMIT_S
    assert read_container(io.BytesIO(data)).tokens.shape == (1, 4, 130)


@pytest.mark.parametrize("length, with_payload", [
    (spec.MAX_OPTIONAL_PAYLOAD + 1, True), (spec.MAX_OPTIONAL_PAYLOAD + 1, False), (2**32 - 1, False)])
def test_optional_chunk_over_16_mib_is_rejected(length, with_payload):
    data = with_optional(SEEDS["plain_pack"], [(1, optional_chunk(0xA0, length, with_payload=with_payload))])
    at = chunk_offsets(SEEDS["plain_pack"])[1][0]
    error = _raises(read_container, data)
    assert (error.field, error.offset) == ("payload_length", at + 4)


def test_optional_chunk_claim_without_its_data_is_truncated():
    data = with_optional(SEEDS["plain_pack"], [(1, optional_chunk(0xA0, 2**20, with_payload=False))])
    assert _raises(read_container, data, Truncated).field == "payload"


def test_salvage_resync_over_an_oversized_optional_chunk_is_fast():
    data = with_optional(SEEDS["plain_pack"],
                         [(1, optional_chunk(0xA0, spec.MAX_OPTIONAL_PAYLOAD + 1, "heads"))])
    outcome, elapsed = timed(salvage, data)
    assert outcome != "interrupted" and elapsed < TIME_LIMIT_S


# --- .ecdc metadata ------------------------------------------------------------------


@pytest.mark.parametrize("depth, kind, closed", [
    (60_000, "array", False), (65_000, "array", False), (32_000, "array", True),
    (12_000, "object", False), (10_000, "object", True), (30_000, "in_m", True), (60_000, "in_m", False),
])
def test_ecdc_nested_metadata_is_a_format_error(depth, kind, closed, encodec_imported):
    data = ecdc_file(nested_json(depth, kind, closed))
    for read in (read_ecdc_info, iterate_ecdc):
        outcome, elapsed = timed(read, data, TokpackError)
        assert type(outcome) is FormatError and elapsed < TIME_LIMIT_S
        assert (outcome.field, outcome.offset) == ("metadata", 9)


def test_ecdc_metadata_over_64_kib_is_rejected_before_parsing(encodec_imported):
    data = ecdc_file(nested_json(60_000, "array", closed=True))  # 120,000 bytes
    error = _raises(read_ecdc_info, data)
    assert (error.field, error.offset) == ("metadata size", 5)


@pytest.mark.parametrize("index", range(len(_BAD_METADATA)))
def test_ecdc_malformed_metadata_is_a_format_error(index, encodec_imported):
    data = ecdc_file(_BAD_METADATA[index], b"\x00" * 16)
    outcome, elapsed = timed(read_ecdc_info, data, TokpackError)
    assert isinstance(outcome, FormatError) and elapsed < TIME_LIMIT_S


@pytest.mark.parametrize("model", ["encodec_24khz", "encodec_48khz"])
def test_ecdc_audio_length_of_2_48_ends_with_the_data(model, encodec_imported):
    data = ecdc_file({"m": model, "al": 2**48, "nc": 2, "lm": False}, bytes(100))
    assert read_ecdc_info(io.BytesIO(data)).audio_length == 2**48
    outcome, elapsed = timed(iterate_ecdc, data, TokpackError)
    assert isinstance(outcome, Truncated) and elapsed < TIME_LIMIT_S
    data = ecdc_file({"m": model, "al": 2**48 + 1, "nc": 2, "lm": False}, bytes(100))
    error = _raises(read_ecdc_info, data)
    assert (error.field, error.offset) == ("metadata 'al'", 9)


@pytest.mark.parametrize("model, length", [("encodec_24khz", 24_000), ("encodec_48khz", 96_000)])
def test_ecdc_small_valid_file_reads(model, length, encodec_imported):
    body = ecdc_body(random.Random(9), model, length, 4)
    outcome, _ = timed(iterate_ecdc, ecdc_file({"m": model, "al": length, "nc": 4, "lm": False}, body))
    assert outcome == "accepted"
