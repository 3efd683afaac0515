"""Dataset shards on disk: Parquet files or WebDataset tars, written whole, read lazily.

numpy, pyarrow and the standard library only: no torch, so training loaders and
``iter_tokens`` read shards without it. Shard names are ``shard-GGGG-IIIII.EXT``: the
run that wrote it (its *generation*, one more than the highest already there) and its
index in that run, so that the same inputs in the same state give the same names. A
shard is written to a temporary file beside its name and linked into place only when
complete (``_io.atomic_write``): a reader never sees a partial shard, and a killed run
leaves only temporaries, which the next run removes.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokpack._io import atomic_write

PARQUET = "parquet"
WEBDATASET = "webdataset"
FORMATS = (PARQUET, WEBDATASET)
SUFFIX = {PARQUET: ".parquet", WEBDATASET: ".tar"}
MANIFEST = "_tokpack.json"
LOCK = ".tokpack.lock"
SHARD_RE = re.compile(r"^shard-(\d{4,})-(\d{5,})\.(parquet|tar)$")

#: the columns of a row, in order; ``tpk`` is the container (None for a failed input)
COLUMNS = ("key", "source", "status", "error", "tpk", "model", "n_codebooks", "n_streams",
           "codebook_size", "frame_rate", "n_frames", "duration_s", "sample_rate", "channels",
           "bytes")
META_COLUMNS = tuple(c for c in COLUMNS if c != "tpk")


def arrow_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("source", pa.string()), ("status", pa.string()),
        ("error", pa.string()), ("tpk", pa.binary()), ("model", pa.string()),
        ("n_codebooks", pa.int32()), ("n_streams", pa.int32()), ("codebook_size", pa.int32()),
        ("frame_rate", pa.float64()), ("n_frames", pa.int64()), ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()), ("channels", pa.int32()), ("bytes", pa.int64()),
    ])


def shard_name(fmt: str, generation: int, index: int) -> str:
    return f"shard-{generation:04d}-{index:05d}{SUFFIX[fmt]}"


def list_shards(outdir: Path, fmt: str) -> list[Path]:
    """The complete shards of format ``fmt`` in ``outdir``, in name order."""
    if not outdir.is_dir():
        return []
    return sorted(p for p in outdir.iterdir()
                  if SHARD_RE.match(p.name) and p.suffix == SUFFIX[fmt])


def generation(path: Path) -> int:
    return int(SHARD_RE.match(path.name).group(1))


def remove_temporaries(outdir: Path) -> None:
    """What a killed run left: temporaries of shards and of the manifest."""
    for stale in outdir.glob(".shard-*.tmp"):
        stale.unlink(missing_ok=True)
    for stale in outdir.glob(f".{MANIFEST}.*.tmp"):
        stale.unlink(missing_ok=True)


# ---- WebDataset keys ----------------------------------------------------------------

_UNSAFE = re.compile(r"[^\w/-]")


def webdataset_keys(keys: list[str]) -> dict[str, str]:
    """Each key's name in a tar: WebDataset takes a sample's key to be a member's name up
    to the first dot of its file name, so dots (and anything but word characters, ``/``
    and ``-``) become ``_``; names that would then collide get 8 hex digits of the key's
    SHA-1. The original key is in the sample's ``.json``."""
    import hashlib

    safe = {key: _UNSAFE.sub("_", key).strip("/") or "_" for key in keys}
    counts: dict[str, int] = {}
    for name in safe.values():
        counts[name] = counts.get(name, 0) + 1
    for key, name in safe.items():
        if counts[name] > 1:
            safe[key] = f"{name}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return safe


# ---- writing --------------------------------------------------------------------------


def write_shard(path: Path, fmt: str, rows: list[dict], wds_keys: dict[str, str]) -> int:
    """Write ``rows`` as one shard at ``path`` (never over an existing file); its bytes.

    WebDataset shards hold the ``ok`` rows only (``KEY.tpk`` and ``KEY.json``); failed
    inputs are listed in the manifest."""
    with atomic_write(path, overwrite=False) as f:
        if fmt == PARQUET:
            import pyarrow as pa

            _write_parquet(pa.Table.from_pylist(rows, schema=arrow_schema()), f)
        else:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for row in rows:
                    if row["status"] != "ok":
                        continue
                    name = wds_keys[row["key"]]
                    meta = {c: row[c] for c in META_COLUMNS}
                    _add(tar, f"{name}.tpk", row["tpk"])
                    _add(tar, f"{name}.json", json.dumps(meta, sort_keys=True).encode())
        f.flush()
        return f.tell()


def _write_parquet(table, f) -> None:
    import pyarrow.parquet as pq

    # tpk bytes are entropy-coded already: compressing them again buys nothing
    pq.write_table(table, f, compression={c: ("none" if c == "tpk" else "zstd") for c in COLUMNS})


def rewrite_without(path: Path, keys: set[str]) -> None:
    """Parquet shard ``path`` without the rows of ``keys``, in place (atomically), or
    removed if nothing else is in it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    drop = pa.array(sorted(keys), pa.string())
    kept = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=drop)))
    if kept.num_rows == 0:
        path.unlink()
        return
    with atomic_write(path) as f:
        _write_parquet(kept, f)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # deterministic bytes: no timestamps
    tar.addfile(info, io.BytesIO(data))


# ---- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A row's key and status as a shard holds it (for resuming)."""

    key: str
    status: str
    shard: Path


def shard_entries(path: Path) -> list[Entry]:
    """Keys and statuses in a shard, without reading its containers."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["key", "status"])
        return [Entry(k, s, path) for k, s in zip(table.column("key").to_pylist(),
                                                    table.column("status").to_pylist())]
    out = []
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                meta = json.loads(tar.extractfile(member).read())
                out.append(Entry(meta["key"], meta["status"], path))
    return out


def iter_rows(path: Path, *, columns: list[str] | None = None, batch_rows: int = 256) -> Iterator[dict]:
    """The rows of one shard as dicts, a few at a time (memory: one batch of rows)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield from batch.to_pylist()
        return
    with tarfile.open(path) as tar:
        pending: dict[str, dict] = {}
        for member in tar:
            if not member.isfile():
                continue
            base, ext = _split(member.name)
            data = tar.extractfile(member).read()
            sample = pending.setdefault(base, {})
            sample[ext] = data
            if "tpk" in sample and "json" in sample:
                del pending[base]
                row = json.loads(sample["json"])
                row["tpk"] = sample["tpk"]
                yield row if columns is None else {c: row[c] for c in columns}


def _split(name: str) -> tuple[str, str]:
    """WebDataset's rule: a member's key is its name up to the first dot of its last
    component, the rest its extension."""
    folder, slash, leaf = name.rpartition("/")
    stem, _, ext = leaf.partition(".")
    return folder + slash + stem, ext
