"""Dataset scale: a corpus -> Parquet or WebDataset shards of token containers, on worker
processes here or on Ray Data, resumable; and the shards read back for training.

``encode_dataset`` is ``tokpack dataset encode``; ``iter_tokens`` yields ``(key, tokens,
meta)`` without torch; ``TokenDataset`` is a torch ``IterableDataset`` over the shards.
pyarrow reads the Parquet shards (``pip install 'tokpack[ray]'`` or ``pyarrow``).
"""

from tokpack.dataset.encode import DatasetResult, encode_dataset
from tokpack.dataset.read import iter_tokens, shard_paths

__all__ = ["DatasetResult", "TokenDataset", "encode_dataset", "iter_tokens", "shard_paths"]


def __getattr__(name: str):
    if name == "TokenDataset":  # imports torch
        from tokpack.dataset import read

        return read.TokenDataset
    raise AttributeError(f"module 'tokpack.dataset' has no attribute {name!r}")
