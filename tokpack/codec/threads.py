"""Pin torch's intra-op thread count for a block (token values depend on it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the old count after.

    ``None`` leaves the count alone. Codes differ in ~1% of positions between 1 and 2
    threads, so a container is only byte-reproducible at the same thread count.
    """
    if n is None:
        yield
        return
    import torch

    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
