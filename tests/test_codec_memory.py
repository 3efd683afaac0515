"""tokpack.codec.memory: how the process's C heap is used (glibc; no-ops elsewhere)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tokpack.codec import memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# a model's layers in small: four 8 MB activations allocated, written, freed, five times;
# prints the page faults of the last four rounds
CHURN = """
import resource, sys
import numpy as np
from tokpack.codec.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def layer():
    arrays = [np.ones(2 << 20, np.float32) for _ in range(4)]
    del arrays
layer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    layer()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                         check=True).stdout
    return int(out)


@glibc
def test_freed_blocks_are_reused_without_faulting_pages_in_again():
    """With glibc's defaults the heap hands the 32 MB back after each round and the next
    round faults its 8,192 pages in again (measured: 8,132); kept, they are reused."""
    kept, default = _faults("keep"), _faults("default")
    assert kept < 200, kept
    assert default > 4000, default  # what the setting is for: the churn is there without it


@glibc
def test_release_memory_still_gives_kept_memory_back():
    assert memory.keep_freed_memory()
    assert memory.keep_freed_memory() is memory.keep_freed_memory()  # once per process
    import numpy as np

    block = np.ones(4 << 20, np.float32)  # 16 MB on the heap, freed at its top
    del block
    assert memory.release_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's madvise")
def test_pages_of_a_mapped_weights_file_are_given_back_and_read_again(tmp_path):
    import torch

    path = tmp_path / "w.th"
    torch.save({"a": torch.arange(300_000, dtype=torch.float32),
                "b": torch.ones(5, dtype=torch.float32)}, path)
    state = torch.load(path, mmap=True, weights_only=True)
    a = state["a"]
    assert torch.equal(a, torch.arange(300_000, dtype=torch.float32))  # read: resident now
    dropped = memory.drop_file_pages([a, state["b"]], path)
    assert 1_150_000 <= dropped <= 1_200_000  # a's whole pages; b has none of its own
    assert torch.equal(a, torch.arange(300_000, dtype=torch.float32))  # read from the file
    heap = torch.arange(300_000, dtype=torch.float32)
    assert memory.drop_file_pages([heap], path) == 0  # not in the file's mapping: untouched
    assert torch.equal(heap, torch.arange(300_000, dtype=torch.float32))
