"""The compiled modules, built by pip with the system's C compiler (everything else is in
pyproject.toml). tokpack.formats._ctxcoder: the CTX coder's symbol loop (plain C, no
dependencies). tokpack._kernels: fused float32 loops for the 48 kHz SEANet on CPU
(docs/PERFORMANCE.md). -ffp-contract=off: no fused multiply-add is formed, so the loops compute the
same bits on every CPU; -fno-trapping-math lets gcc vectorise the ELU's select (no result
changes: it only waives floating-point exception flags, which nothing reads). optional: where
they cannot be built (no C compiler), tokpack installs without them and constriction and
torch's ops do the work (slower); tests/test_kernels.py and tests/test_ctxcoder.py fail
there, so CI always has them."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "tokpack.formats._ctxcoder",
    sources=["tokpack/formats/_ctxcoder.c"],
    extra_compile_args=["-O2"],
    optional=True,
), Extension(
    "tokpack._kernels",
    sources=["tokpack/_kernels.c"],
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"],
    extra_link_args=["-fopenmp"],
    optional=True,
)])
