"""Reading a dataset back: ``iter_tokens`` (numpy, no torch) and ``TokenDataset``, a
torch ``IterableDataset`` that splits the shards across DataLoader workers and ranks."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

from tokpack.dataset import shards as sh


def shard_paths(source: str | os.PathLike | list) -> list[Path]:
    """A dataset folder's shards (Parquet or WebDataset, in name order), or the shard
    files given."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            for fmt in sh.FORMATS:
                found = sh.list_shards(path, fmt)
                if found:
                    return found
            return []
        return [path]
    return [Path(p) for p in source]


def iter_tokens(source, *, with_failed: bool = False) -> Iterator[tuple[str, object, dict]]:
    """``(key, tokens, meta)`` for every ``ok`` row of a dataset folder or of shard files:
    tokens uint16 [streams, codebooks, frames], meta the row's other columns (and, for a
    segmented model, ``segment_frames`` and ``scales``). Each container is verified as it
    is read. ``with_failed``: failed rows too, tokens None (Parquet only: WebDataset
    shards hold ok rows; the manifest lists failures)."""
    for path in shard_paths(source):
        yield from _shard_tokens(path, with_failed)


def _shard_tokens(path: Path, with_failed: bool = False):
    from tokpack.formats import read_container

    for row in sh.iter_rows(path):
        data = row.pop("tpk")
        if row["status"] != "ok":
            if with_failed:
                yield row["key"], None, row
            continue
        c = read_container(io.BytesIO(data))
        if c.header.segmented:
            row["segment_frames"], row["scales"] = c.segment_frames, c.scales
        yield row["key"], c.tokens, row


def _split(paths: list[Path]) -> list[Path]:
    """This process's share of the shards: by rank (torch.distributed when initialised,
    else RANK/WORLD_SIZE), then by DataLoader worker."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    paths = paths[rank::world]
    info = torch.utils.data.get_worker_info()
    if info is not None:
        paths = paths[info.id::info.num_workers]
    return paths


_CLASSES: dict = {}


def __getattr__(name: str):
    """``TokenDataset`` is made on first use, as it subclasses torch's IterableDataset:
    importing this module imports no torch. (Pickling finds it here by name.)"""
    if name != "TokenDataset":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _CLASSES:
        _CLASSES[name] = _token_dataset_class()
    return _CLASSES[name]


def _token_dataset_class():
    import torch

    class TokenDataset(torch.utils.data.IterableDataset):
        """The ``ok`` rows of a dataset as ``(key, tokens, meta)``, tokens an int64
        tensor [streams, codebooks, frames] (``dtype`` to change it). Each rank, and each
        DataLoader worker within it, reads its own shards (``shards[rank::world]``, then
        ``[worker::workers]``): give at least as many shards as readers, or some read
        nothing."""

        def __init__(self, source, *, dtype=torch.int64) -> None:
            self.paths = shard_paths(source)
            self.dtype = dtype

        def __iter__(self):
            for path in _split(self.paths):
                for key, tokens, meta in _shard_tokens(path):
                    yield key, torch.from_numpy(tokens.astype("int64")).to(self.dtype), meta

    TokenDataset.__module__ = __name__
    return TokenDataset
