"""Entropy-model priors (``.tpp`` files, docs/FORMAT.md "Prior files") for the CTX coder.

A prior holds, per codebook, the starting point of the adaptive models of
:mod:`tokpack.formats.ctx`: an order-0 distribution and its strength, and optionally a
neighbour model (for each code, the codes most likely to follow it in the next frame, with
a distribution over their ranks). Containers name the prior they were coded with by the
SHA-256 of its file; the all-zero digest names the built-in uniform prior.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zstandard

from tokpack.errors import (
    BadMagic,
    ChecksumMismatch,
    FieldOutOfRange,
    FormatError,
    PriorNotFound,
    Truncated,
    UnsupportedVersion,
)
from tokpack.formats import spec


@dataclasses.dataclass(frozen=True, eq=False)
class CodebookPrior:
    """Starting point of one codebook's models (all integers; see FORMAT.md)."""

    strength: int  # pseudo-count weight of ``order0``, 1..PRIOR_MAX_STRENGTH
    order0: np.ndarray  # int64 [codebook_size], sums to PRIOR_ONE
    mix: int = 0  # weight of the neighbour model out of PRIOR_MIX_ONE; 0 iff no neighbours
    rank_strength: int = 0  # pseudo-count weight of ``ranks`` (0 iff no neighbours)
    ranks: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    neighbours: np.ndarray | None = None  # int64 [codebook_size, M], distinct codes per row

    @property
    def n_neighbours(self) -> int:
        return 0 if self.neighbours is None else self.neighbours.shape[1]


@dataclasses.dataclass(frozen=True, eq=False)
class Prior:
    """A validated prior; ``sha256`` is the identity containers refer to."""

    model_id: str
    weights_sha256: bytes
    codebook_size: int
    codebooks: tuple[CodebookPrior, ...]

    def __post_init__(self) -> None:
        _check(self)

    @property
    def n_codebooks(self) -> int:
        return len(self.codebooks)

    @functools.cached_property
    def file_bytes(self) -> bytes:
        return _to_bytes(self)

    @functools.cached_property
    def sha256(self) -> bytes:
        """SHA-256 of the prior's file; the built-in ones': all zeros for the uniform prior,
        :func:`generic_sha256` for a generic one."""
        if self.model_id == spec.UNIFORM_PRIOR_ID:
            return bytes(spec.WEIGHTS_SHA256_SIZE)
        if self.model_id == spec.GENERIC_PRIOR_ID:
            return generic_sha256(self.codebook_size)
        return hashlib.sha256(self.file_bytes).digest()

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_bytes(self.file_bytes)


@functools.lru_cache(maxsize=16)
def uniform_prior(codebook_size: int, n_codebooks: int) -> Prior:
    """The prior of containers whose ``prior_sha256`` is zero: every code equally likely."""
    order0 = table(np.ones(codebook_size, np.int64))
    book = CodebookPrior(strength=spec.UNIFORM_PRIOR_STRENGTH, order0=order0)
    return Prior(
        model_id=spec.UNIFORM_PRIOR_ID,
        weights_sha256=bytes(spec.WEIGHTS_SHA256_SIZE),
        codebook_size=codebook_size,
        codebooks=(book,) * n_codebooks,
    )


def generic_sha256(codebook_size: int) -> bytes:
    """The digest that names the generic prior of ``codebook_size`` codes (FORMAT.md)."""
    return hashlib.sha256(spec.GENERIC_PRIOR_NAME.format(codebook_size).encode("ascii")).digest()


@functools.lru_cache(maxsize=16)
def generic_prior(codebook_size: int, n_codebooks: int) -> Prior:
    """The generic prior of ``codebook_size`` codes (FORMAT.md "Generic priors"), for
    ``n_codebooks`` codebooks: the uniform table with strength ``codebook_size // 8`` (at
    least 1), which keeps more room for codes a file has not used yet than the uniform
    prior's 32, the better choice measured on 1024-code tokens (docs/ENTROPY.md). Built
    in, like the uniform prior: it needs no file and no model, and is named by
    :func:`generic_sha256`."""
    order0 = table(np.ones(codebook_size, np.int64))
    book = CodebookPrior(strength=max(1, codebook_size // spec.GENERIC_PRIOR_DIVISOR),
                         order0=order0)
    prior = Prior(
        model_id=spec.GENERIC_PRIOR_ID,
        weights_sha256=bytes(spec.WEIGHTS_SHA256_SIZE),
        codebook_size=codebook_size,
        codebooks=(book,) * n_codebooks,
    )
    _GENERIC_DIGESTS.add(prior.sha256.hex())
    return prior


_GENERIC_DIGESTS: set[str] = set()  # of the generic priors built in this process


def prior_label(prior_sha256: str | None, codebook_size: int | None = None) -> str | None:
    """A container's ``prior_sha256`` (hex) as JSON and messages show it: "uniform" for
    the built-in uniform prior (all zeros), "generic" for a generic prior (one this process
    built, or the one of ``codebook_size`` codes), None when the container names none."""
    if prior_sha256 is None:
        return None
    if not prior_sha256.strip("0"):
        return "uniform"
    if codebook_size and generic_sha256(codebook_size).hex() == prior_sha256:
        return "generic"
    if prior_sha256 in _GENERIC_DIGESTS:
        return "generic"
    return prior_sha256


def _spread(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (remainder to the largest)."""
    from tokpack.formats.ctx import quantize

    return quantize(weights.astype(np.int64), total)


def table(weights: np.ndarray) -> np.ndarray:
    """Non-negative integer weights as a prior's table (proportional, summing to PRIOR_ONE)."""
    return _spread(np.asarray(weights, dtype=np.int64), spec.PRIOR_ONE)


def _header_struct() -> struct.Struct:
    return struct.Struct("<8sBBBBI32s32sI")


def _to_bytes(prior: Prior) -> bytes:
    parts = []
    for book in prior.codebooks:
        parts.append(struct.pack("<I", book.strength))
        parts.append(book.order0.astype("<u4").tobytes())
        parts.append(struct.pack("<HBB", book.n_neighbours, book.mix, 0))
        if book.n_neighbours:
            parts.append(struct.pack("<I", book.rank_strength))
            parts.append(book.ranks.astype("<u4").tobytes())
            parts.append(book.neighbours.astype("<u2").tobytes())
    content = b"".join(parts)
    body = zstandard.ZstdCompressor(
        level=spec.ZSTD_LEVEL, write_content_size=True, write_checksum=False
    ).compress(content)
    head = _header_struct().pack(
        spec.PRIOR_MAGIC, spec.PRIOR_VERSION, 0, prior.n_codebooks, 0, prior.codebook_size,
        prior.model_id.encode("ascii").ljust(spec.MODEL_ID_SIZE, b"\0"),
        prior.weights_sha256, len(body),
    )
    head += struct.pack("<I", zlib.crc32(head))
    return head + body + struct.pack("<I", zlib.crc32(body))


def _record_size(codebook_size: int, n_neighbours: int) -> int:
    size = 4 + 4 * codebook_size + 4
    if n_neighbours:
        size += 4 + 4 * n_neighbours + 2 * codebook_size * n_neighbours
    return size


def _invalid(message: str, field: str, offset: int | None = None) -> FieldOutOfRange:
    return FieldOutOfRange(message, offset=offset, field=field)


def _check(prior: Prior) -> None:
    """The rules of FORMAT.md "Prior files", on an object (from a file or built in memory)."""
    m = prior.codebook_size
    if not spec.MIN_CODEBOOK_SIZE <= m <= spec.MAX_CODEBOOK_SIZE:
        raise _invalid(f"{m} is out of range {spec.MIN_CODEBOOK_SIZE}..{spec.MAX_CODEBOOK_SIZE}",
                       "codebook_size")
    if not 1 <= prior.n_codebooks <= spec.MAX_CODEBOOKS:
        raise _invalid(f"{prior.n_codebooks} is out of range 1..{spec.MAX_CODEBOOKS}",
                       "n_codebooks")
    model_id = prior.model_id
    if (not 1 <= len(model_id) <= spec.MODEL_ID_SIZE
            or not set(model_id.encode("ascii", "replace")) <= spec.MODEL_ID_ALPHABET):
        raise _invalid(f"{model_id!r} is not 1..32 characters of [a-z0-9_.-]", "model_id")
    if len(prior.weights_sha256) != spec.WEIGHTS_SHA256_SIZE:
        raise _invalid("must be 32 bytes", "weights_sha256")
    total = 0
    for k, book in enumerate(prior.codebooks):
        where = f"codebook {k}"
        total += _record_size(m, book.n_neighbours)
        if not 1 <= book.strength <= spec.PRIOR_MAX_STRENGTH:
            raise _invalid(f"{where}: {book.strength} is out of range "
                           f"1..{spec.PRIOR_MAX_STRENGTH}", "strength")
        _check_table(book.order0, m, f"{where}: order0")
        n = book.n_neighbours
        if not 0 <= n <= min(m - 1, spec.PRIOR_MAX_NEIGHBOURS):
            raise _invalid(f"{where}: {n} neighbours, at most "
                           f"{min(m - 1, spec.PRIOR_MAX_NEIGHBOURS)}", "n_neighbours")
        if not 0 <= book.mix < spec.PRIOR_MIX_ONE or (book.mix == 0) != (n == 0):
            raise _invalid(f"{where}: mix {book.mix} must be 1..{spec.PRIOR_MIX_ONE - 1} with "
                           "neighbours and 0 without", "mix")
        if not n:
            continue
        if not 1 <= book.rank_strength <= spec.PRIOR_MAX_STRENGTH:
            raise _invalid(f"{where}: {book.rank_strength} is out of range "
                           f"1..{spec.PRIOR_MAX_STRENGTH}", "rank_strength")
        _check_table(book.ranks, n, f"{where}: ranks")
        nb = book.neighbours
        if nb.shape != (m, n) or nb.min() < 0 or nb.max() >= m:
            raise _invalid(f"{where}: neighbours must be {m} rows of {n} codes below {m}",
                           "neighbours")
        ordered = np.sort(nb, axis=1)
        if n > 1 and np.any(ordered[:, 1:] == ordered[:, :-1]):
            raise _invalid(f"{where}: a code is listed twice among a code's neighbours",
                           "neighbours")
    if total > spec.PRIOR_MAX_CONTENT:
        raise _invalid(f"{total} bytes of tables, at most {spec.PRIOR_MAX_CONTENT}", "content")


def _check_table(table: np.ndarray, n: int, what: str) -> None:
    if table.shape != (n,) or table.min() < 0 or int(table.sum()) != spec.PRIOR_ONE:
        raise _invalid(f"{what} must be {n} non-negative integers summing to {spec.PRIOR_ONE}",
                       "table")


def from_bytes(data: bytes, path: str | None = None) -> Prior:
    """Parse and validate a ``.tpp`` file; errors are FormatError subclasses naming offsets."""
    try:
        prior = _parse(memoryview(data))
    except FormatError as error:
        error.path = path
        raise
    # its identity is the SHA-256 of this file (FORMAT.md), not of a re-encoding of it
    # (another zstd could compress the same tables otherwise; and compressing them again
    # costs ~0.1 s of a command's start for test_24khz's prior)
    prior.__dict__["file_bytes"] = bytes(data)
    return prior


def _parse_header(data: memoryview) -> tuple[PriorHeader, int]:
    """The validated header and ``body_size`` (not checked against the data's length)."""
    hs = _header_struct()
    magic = bytes(data[:8])
    if magic != spec.PRIOR_MAGIC[: len(magic)] or not magic:
        raise BadMagic("not a tokpack prior (.tpp)", offset=0, field="magic")
    if len(data) < hs.size + 4:
        raise Truncated(f"data ends after {len(data)} bytes, inside the header",
                        offset=len(data), field="header")
    (_, version, res1, n_codebooks, res2, m, raw_id, weights, body_size) = hs.unpack_from(data)
    (stored,) = struct.unpack_from("<I", data, hs.size)
    if stored != zlib.crc32(data[: hs.size]):
        raise ChecksumMismatch("prior header is corrupt", offset=hs.size, field="header_crc32")
    if version != spec.PRIOR_VERSION:
        raise UnsupportedVersion(f"prior version {version} is not supported (this reader reads "
                                 f"{spec.PRIOR_VERSION})", offset=8, field="version")
    if res1 or res2:
        raise _invalid("reserved, must be 0", "reserved", 9 if res1 else 11)
    name = raw_id.rstrip(b"\0")
    if b"\0" in name or not name or not set(name) <= spec.MODEL_ID_ALPHABET:
        raise _invalid("must be 1..32 characters of [a-z0-9_.-] padded with NUL", "model_id", 16)
    if not 1 <= n_codebooks <= spec.MAX_CODEBOOKS:
        raise _invalid(f"{n_codebooks} is out of range 1..{spec.MAX_CODEBOOKS}", "n_codebooks", 10)
    if not spec.MIN_CODEBOOK_SIZE <= m <= spec.MAX_CODEBOOK_SIZE:
        raise _invalid(f"{m} is out of range", "codebook_size", 12)
    return PriorHeader(name.decode("ascii"), bytes(weights), n_codebooks, m), body_size


def _parse(data: memoryview) -> Prior:
    hs = _header_struct()
    header, body_size = _parse_header(data)
    n_codebooks, m = header.n_codebooks, header.codebook_size
    start = hs.size + 4
    if body_size > spec.PRIOR_MAX_CONTENT or len(data) != start + body_size + 4:
        if len(data) < start + body_size + 4 and body_size <= spec.PRIOR_MAX_CONTENT:
            raise Truncated(f"the body of {body_size} bytes is cut short", offset=len(data),
                            field="body")
        raise _invalid(f"body_size {body_size} does not match the file ({len(data)} bytes)",
                       "body_size", 80)
    body = data[start : start + body_size]
    (stored,) = struct.unpack_from("<I", data, start + body_size)
    if stored != zlib.crc32(body):
        raise ChecksumMismatch("prior body is corrupt", offset=start + body_size,
                               field="body_crc32")
    try:
        declared = zstandard.get_frame_parameters(body).content_size
        if declared > spec.PRIOR_MAX_CONTENT:
            raise _invalid(f"content of {declared} bytes, at most {spec.PRIOR_MAX_CONTENT}",
                           "body", start)
        content = zstandard.ZstdDecompressor().decompress(
            bytes(body), max_output_size=spec.PRIOR_MAX_CONTENT, allow_extra_data=False)
    except zstandard.ZstdError as error:
        raise _invalid(f"body is not one valid zstd frame: {error}", "body", start) from None
    books = []
    pos = 0

    def take(n: int, dtype: str) -> np.ndarray:
        nonlocal pos
        size = n * np.dtype(dtype).itemsize
        if pos + size > len(content):
            raise _invalid(f"tables end early (codebook {len(books)})", "body", start)
        out = np.frombuffer(content, dtype=dtype, count=n, offset=pos).astype(np.int64)
        pos += size
        return out

    for _ in range(n_codebooks):
        strength = int(take(1, "<u4")[0])
        order0 = take(m, "<u4")
        n_nb, mix, reserved = (int(v) for v in (*take(1, "<u2"), *take(2, "u1")))
        if reserved:
            raise _invalid(f"codebook {len(books)}: reserved byte must be 0", "reserved", start)
        if n_nb > min(m - 1, spec.PRIOR_MAX_NEIGHBOURS):
            raise _invalid(f"codebook {len(books)}: {n_nb} neighbours", "n_neighbours", start)
        fields = dict(strength=strength, order0=order0, mix=mix)
        if n_nb:
            fields.update(rank_strength=int(take(1, "<u4")[0]), ranks=take(n_nb, "<u4"),
                          neighbours=take(m * n_nb, "<u2").reshape(m, n_nb))
        books.append(CodebookPrior(**fields))
    if pos != len(content):
        raise _invalid(f"{len(content) - pos} bytes after the last table", "body", start)
    prior = Prior(model_id=header.model_id, weights_sha256=header.weights_sha256,
                  codebook_size=m, codebooks=tuple(books))
    if prior.model_id in (spec.UNIFORM_PRIOR_ID, spec.GENERIC_PRIOR_ID):
        raise _invalid(f"{prior.model_id!r} is reserved for the built-in priors", "model_id", 16)
    return prior


@dataclasses.dataclass(frozen=True)
class PriorHeader:
    """What a prior file's header says it is for (validated; the body is not read)."""

    model_id: str
    weights_sha256: bytes
    n_codebooks: int
    codebook_size: int


MAX_FILE_SIZE = spec.PRIOR_MAX_CONTENT + 1024  # no valid prior file is larger


def _read(path: str | os.PathLike, n: int | None = None) -> bytes:
    """The first ``n`` bytes (all, if None) of a prior file, which must be a regular file of
    at most MAX_FILE_SIZE bytes: checked before it is opened, so a link to /dev/zero or a
    FIFO is refused, not read or waited on."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise FormatError("not a regular file", path=os.fsdecode(path))
    if info.st_size > MAX_FILE_SIZE:
        raise FormatError(f"larger than any prior ({MAX_FILE_SIZE} bytes)", path=os.fsdecode(path))
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1 if n is None else n)
    if len(data) > MAX_FILE_SIZE:  # it grew since
        raise FormatError(f"larger than any prior ({MAX_FILE_SIZE} bytes)", path=os.fsdecode(path))
    return data


def read_header(path: str | os.PathLike) -> PriorHeader:
    """The header of the ``.tpp`` file at ``path``: its first 88 bytes, checked (magic,
    CRC, version, reserved bytes, ranges) as :func:`load` checks them."""
    data = memoryview(_read(path, _header_struct().size + 4))
    try:
        return _parse_header(data)[0]
    except FormatError as error:
        error.path = str(path)
        raise


def load(path: str | os.PathLike) -> Prior:
    """Read a ``.tpp`` file (bounded: a file larger than any valid prior is refused)."""
    return from_bytes(_read(path), os.fsdecode(path))


def find(digest: bytes, candidates: Iterable[Prior | str | os.PathLike],
         directories: Iterable[str | os.PathLike] = ()) -> Prior | None:
    """The prior whose SHA-256 is ``digest``: among ``candidates`` (priors or paths), then
    the ``*.tpp`` files of ``directories``; None if none matches."""
    for item in candidates:
        prior = item if isinstance(item, Prior) else load(item)
        if prior.sha256 == digest:
            return prior
    for directory in directories:
        for path in sorted(Path(directory).glob("*.tpp")):
            try:
                data = _read(path)
            except (FormatError, OSError):
                continue  # not a prior file (a device, a FIFO, a huge file): not the one
            if hashlib.sha256(data).digest() == digest:
                return from_bytes(data, str(path))
    return None


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "priors"
#: shipped priors no model's default any more, kept for the containers that name them
RETIRED_DIR = SHIPPED_DIR / "retired"
PATH_VARIABLE = "TOKPACK_PRIOR_PATH"

PriorSource = Prior | str | os.PathLike


def default_directories() -> list[Path]:
    """Where a model's default prior is looked for: $TOKPACK_PRIOR_PATH, then the shipped ones."""
    listed = [Path(p) for p in os.environ.get(PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*listed, SHIPPED_DIR]


def search_directories() -> list[Path]:
    """Where priors are looked up by digest: the default directories, then the retired ones."""
    return [*default_directories(), RETIRED_DIR]


def resolve(digest: bytes, candidates: Iterable[PriorSource] = (), *, codebook_size: int,
            n_codebooks: int) -> Prior:
    """The prior a container names: the uniform one for the zero digest, the generic one
    of these codebooks for its digest, else the first of ``candidates`` and then of
    :func:`search_directories` whose SHA-256 matches."""
    if digest == spec.UNIFORM_PRIOR_SHA256:
        return uniform_prior(codebook_size, n_codebooks)
    if digest == generic_sha256(codebook_size):
        return generic_prior(codebook_size, n_codebooks)
    found = find(digest, candidates, search_directories())
    if found is None:
        raise PriorNotFound(
            f"the tokens were coded with the CTX prior {digest.hex()}, which is not here: "
            f"pass its .tpp file with --prior, or put it in a directory of ${PATH_VARIABLE}"
        )
    return found
