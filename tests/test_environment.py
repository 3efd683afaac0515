"""The suite's own assumptions about the machine it runs on, checked here; with the rest
of what a run depends on they are printed at its end (conftest's summary), so that a red
run names its cause.

The suite asserts exactly what tokpack guarantees on any CPU, and bounds what it only
measures (docs/PERFORMANCE.md, "Determinism"); those bounds were measured on x86-64 CPUs
with AVX2 and AVX-512 kernels, and ATen's default ones (oneDNN held to SSE4.1), at 1 and 2
threads.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from tokpack.codec import testmodels
from tokpack.codec.priors import default_prior
from tokpack.formats import prior as prior_files

#: what torch.backends.cpu.get_cpu_capability() reported where the bounds were measured
#: (DEFAULT: the whole suite under ATEN_CPU_CAPABILITY=default and ONEDNN_MAX_CPU_ISA=SSE41,
#: what a CPU without AVX2 gets, on an AMD AVX2 CPU, 2026-12-02)
MEASURED_CAPABILITIES = ("AVX2", "AVX512", "DEFAULT")


def test_cpu_kernels_are_ones_the_bounds_were_measured_with(record_fact):
    capability = torch.backends.cpu.get_cpu_capability()
    record_fact("ATen kernels", capability)
    assert capability in MEASURED_CAPABILITIES, (
        f"torch runs {capability} kernels here; the suite's agreement bounds were measured "
        f"with {' and '.join(MEASURED_CAPABILITIES)} (x86-64): a failure of a bound may be "
        f"this CPU, not tokpack")


def test_the_thread_counts_the_tests_use_can_be_set(record_fact):
    before = torch.get_num_threads()
    record_fact("torch threads", before)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["test_24khz", "test_48khz", "test_mimi", "test_dac_44khz"])
def test_test_models_are_the_reference_build(name, request, record_fact):
    """The recipe builds the same weights on every CPU (testmodels' module doc); if this
    fails, containers of this machine's test models decode nowhere else."""
    loaded = request.getfixturevalue(name)
    same = loaded.weights_hex == testmodels.REFERENCE_SHA256[name]
    record_fact(f"{name} weights", "reference" if same else f"OTHER ({loaded.weights_hex[:12]})")
    assert same, (f"{name} was built here with weights {loaded.weights_hex}, not the "
                  f"recipe's {testmodels.REFERENCE_SHA256[name]}")


@pytest.mark.parametrize("name", ["test_24khz", "test_48khz", "test_mimi", "test_dac_44khz"])
def test_shipped_priors_are_found(name, request, record_fact):
    loaded = request.getfixturevalue(name)
    found = default_prior(name, loaded.weights_sha256)
    shipped = hashlib.sha256((prior_files.SHIPPED_DIR / f"{name}.tpp").read_bytes()).digest()
    record_fact(f"{name} prior", "shipped" if found is not None and found.sha256 == shipped
                else "NOT FOUND")
    assert found is not None and found.sha256 == shipped, (
        f"the default prior of {name} (weights {loaded.weights_hex[:12]}) is not the shipped "
        f"{prior_files.SHIPPED_DIR / (name + '.tpp')}")
