"""Rate, distortion and speed of each input x model x bandwidth (what `tokpack bench` reports).

Each cell encodes the input's bytes into a container in memory and decodes that back to
float audio at the source's rate, channels and length, timing both; the decoded audio is
then scored against the source with :func:`tokpack.compare.measure`. Prints nothing.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np

from tokpack.batch import AUDIO_SUFFIXES
from tokpack.compare import Metrics, align, measure
from tokpack.errors import ModelError, TokpackError

if TYPE_CHECKING:
    from tokpack.codec.weights import LoadedModel

SCHEMA_VERSION = 1

#: seconds of audio encoded and decoded once per model before timing (first calls pay
#: for torch's lazy initialisation, which is not the codec's speed)
WARMUP_SECONDS = 0.5

Src = Union[str, os.PathLike, BinaryIO]


@dataclass(frozen=True)
class BenchRow:
    """One input x model x bandwidth. Keys and units: docs/CLI.md (``bench`` schema)."""

    schema_version: int
    path: str
    model: str
    bandwidth_kbps: float
    n_codebooks: int
    sample_rate: int  # Hz of the source
    channels: int  # of the source
    frames: int  # sample frames of the source
    duration_s: float
    container_bytes: int
    bitrate_bps: float | None  # container bits per second of audio; None when empty
    compression_ratio: float  # source as 16-bit PCM / container_bytes
    encode_s: float  # wall seconds, file bytes in memory -> container in memory
    decode_s: float  # wall seconds, container in memory -> float audio at the source rate
    encode_rtf: float  # duration_s / encode_s: audio seconds per wall second
    decode_rtf: float
    metrics: Metrics

    def to_json(self) -> dict:
        out = asdict(self)
        del out["metrics"]
        out.update(self.metrics.to_json())
        return out


#: the keys of a row's JSON object, in order (also the CSV columns)
ROW_KEYS = tuple(f.name for f in fields(BenchRow) if f.name != "metrics") + tuple(f.name for f in fields(Metrics))


@dataclass(frozen=True)
class BenchFailure:
    """An input that could not be read (model, bandwidth None) or one cell that failed."""

    path: str
    model: str | None
    bandwidth_kbps: float | None
    error: str

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


def find_audio(inputs: Iterable[str]) -> list[str]:
    """Inputs as given; a directory is replaced by the audio files below it (sorted, walked
    recursively, hidden names skipped). '-' (stdin) passes through."""
    found: list[str] = []
    for name in inputs:
        if name != "-" and os.path.isdir(name):
            below = []
            for dirpath, dirnames, filenames in os.walk(name):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                below.extend(Path(dirpath) / f for f in filenames
                             if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_SUFFIXES)
            found.extend(str(p) for p in sorted(below, key=lambda p: p.parts))
        else:
            found.append(name)
    return found


def plan_cells(models: Sequence[str], bandwidths: Sequence[float] | None
               ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(model, bandwidth) pairs to run, and those skipped because the model lacks them.

    No ``bandwidths``: every bandwidth of each model. ModelError for an unknown model, or
    for a model that has none of the bandwidths asked for.
    """
    from tokpack.codec.registry import format_kbps, get_spec

    cells, skipped = [], []
    for name in dict.fromkeys(models):
        spec = get_spec(name)
        wanted = spec.bandwidths if not bandwidths else tuple(dict.fromkeys(float(b) for b in bandwidths))
        mine = [(name, b) for b in wanted if b in spec.bandwidths]
        if not mine:
            valid = ", ".join(format_kbps(b) for b in spec.bandwidths)
            raise ModelError(f"model {name} has none of the bandwidths asked for; choose from {valid}")
        cells.extend(mine)
        skipped.extend((name, b) for b in wanted if b not in spec.bandwidths)
    return cells, skipped


def _pcm(audio: np.ndarray, rate: int) -> io.BytesIO:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype="FLOAT", format="WAV")
    buf.seek(0)
    return buf


def warm_up(loaded: LoadedModel, bandwidth: float, *, threads: int | None = None) -> None:
    """One short encode and decode, so that timings exclude torch's first-call costs."""
    from tokpack.codec.engine import decode, encode

    rate = loaded.spec.sample_rate
    t = np.arange(int(WARMUP_SECONDS * rate)) / rate
    audio = np.repeat((0.1 * np.sin(2 * np.pi * 440 * t))[:, None], loaded.spec.channels, axis=1)
    container = io.BytesIO()
    encode(_pcm(audio.astype(np.float32), rate), container, model=loaded, bandwidth=bandwidth, threads=threads)
    container.seek(0)
    decode(container, io.BytesIO(), model=loaded, subtype="FLOAT", threads=threads)


def bench_cell(data: bytes, ref: np.ndarray, sample_rate: int, loaded: LoadedModel, bandwidth: float,
               *, path: str, threads: int | None = None) -> BenchRow:
    """Encode ``data`` (an audio file's bytes; ``ref`` its samples) and decode it, in memory."""
    from tokpack.codec.audio import read_audio
    from tokpack.codec.engine import decode, encode

    container = io.BytesIO()
    t0 = time.perf_counter()
    enc = encode(io.BytesIO(data), container, model=loaded, bandwidth=bandwidth, threads=threads)
    encode_s = time.perf_counter() - t0
    container_bytes = container.getbuffer().nbytes
    container.seek(0)
    out = io.BytesIO()
    t0 = time.perf_counter()
    decode(container, out, model=loaded, subtype="FLOAT", threads=threads)
    decode_s = time.perf_counter() - t0
    out.seek(0)
    deg, info = read_audio(out, name=path)
    a, b = align(ref, sample_rate, deg, info.sample_rate)  # already equal; cheap insurance
    frames, channels = ref.shape
    duration = frames / sample_rate
    return BenchRow(
        schema_version=SCHEMA_VERSION,
        path=path,
        model=enc.model,
        bandwidth_kbps=float(bandwidth),
        n_codebooks=enc.n_codebooks,
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        duration_s=duration,
        container_bytes=container_bytes,
        bitrate_bps=container_bytes * 8 / duration if duration > 0 else None,
        compression_ratio=frames * channels * 2 / container_bytes,
        encode_s=encode_s,
        decode_s=decode_s,
        encode_rtf=duration / encode_s,
        decode_rtf=duration / decode_s,
        metrics=measure(a, b, sample_rate),
    )


def _read(src: Src, label: str) -> bytes:
    if isinstance(src, (str, os.PathLike)):
        try:
            return Path(src).read_bytes()
        except OSError as exc:
            raise TokpackError(f"cannot open: {exc.strerror or exc}", path=label) from None
    return src.read()


def _message(exc: TokpackError | OSError, path: str) -> str:
    if isinstance(exc, TokpackError):
        return str(exc) if exc.path and exc.path != path else exc.message
    return exc.strerror or str(exc)


def bench(inputs: Sequence[Src], models: Sequence[str | LoadedModel], bandwidths: Sequence[float] | None = None,
          *, threads: int | None = None, device: str = "cpu") -> Iterator[BenchRow | BenchFailure]:
    """Yield a :class:`BenchRow` per input x model x bandwidth, in that nesting order.

    ``inputs``: paths or binary file objects (directories are not expanded here; see
    :func:`find_audio`). ``models``: names or LoadedModels (each loaded once). Expected
    failures are yielded as :class:`BenchFailure`, not raised.
    """
    from tokpack.codec.audio import read_audio, source_label
    from tokpack.codec.weights import load_model

    loaded = {}
    for m in models:
        lm = load_model(m, device=device) if isinstance(m, str) else m
        loaded[lm.spec.name] = lm
    cells, _ = plan_cells(list(loaded), bandwidths)
    warm: set[str] = set()
    for src in inputs:
        path = source_label(src)
        try:
            data = _read(src, path)
            ref, info = read_audio(io.BytesIO(data), name=path)
        except (TokpackError, OSError) as exc:
            yield BenchFailure(path, None, None, _message(exc, path))
            continue
        for name, bandwidth in cells:
            try:
                if name not in warm:
                    warm_up(loaded[name], bandwidth, threads=threads)
                    warm.add(name)
                yield bench_cell(data, ref, info.sample_rate, loaded[name], bandwidth, path=path, threads=threads)
            except (TokpackError, OSError) as exc:
                yield BenchFailure(path, name, float(bandwidth), _message(exc, path))
