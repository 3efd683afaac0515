"""The one compiled module, tokpack._kernels: fused float32 loops for the 48 kHz SEANet on
CPU (docs/PERFORMANCE.md), built by pip with the system's C compiler. Everything else is in
pyproject.toml. -ffp-contract=off: no fused multiply-add is formed, so the loops compute the
same bits on every CPU; -fno-trapping-math lets gcc vectorise the ELU's select (no result
changes: it only waives floating-point exception flags, which nothing reads). optional: where
it cannot be built (no C compiler), tokpack installs without it and torch's ops do the work
(slower at 48 kHz); tests/test_kernels.py fails there, so CI always has it."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "tokpack._kernels",
    sources=["tokpack/_kernels.c"],
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"],
    extra_link_args=["-fopenmp"],
    optional=True,
)])
