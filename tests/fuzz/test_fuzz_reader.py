"""A fast, seeded subset of the container fuzzing (the long run: scripts/fuzz_container.py)."""

import io
import random

import pytest

from mutate import mutate, seed_containers
from tokpack.errors import FormatError
from tokpack.formats import read_container
from tokpack.formats.salvage import salvage

SEEDS = seed_containers()


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
