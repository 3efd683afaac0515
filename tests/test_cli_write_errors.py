"""An output that cannot be written (a full disk): one line naming it, exit 1, nothing left.

The disk fills in a subprocess whose files may not grow past LIMIT bytes (RLIMIT_FSIZE): a
write past it fails with EFBIG ("File too large") as on a full disk with ENOSPC, through
the same calls. Python ignores SIGXFSZ, which would otherwise kill the process.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tokpack.cli import app

LIMIT = 4096  # bytes a file may hold in the subprocess; every output below needs more

runner = CliRunner()


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def tokpack_on_a_full_disk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokpack", *args], capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=limit_file_size, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, signals, test_24khz):
    """Two 2 s WAVs and their containers (test_24khz is built into the cache first)."""
    d = tmp_path_factory.mktemp("full")
    for i, name in enumerate(["a", "b"]):
        signals.write(d / f"{name}.wav", signals.noise(48_000, seed=i), 24_000, subtype="PCM_16")
    r = runner.invoke(app, ["encode", str(d / "a.wav"), str(d / "b.wav"), "-m", "test_24khz", "-b", "24", "-q"])
    assert r.exit_code == 0, r.stderr
    assert all(os.path.getsize(d / f"{name}.tpk") > LIMIT for name in "ab")
    return d


def test_encode_to_a_full_disk(inputs, tmp_path):
    src, out = inputs / "a.wav", tmp_path / "a.tpk"
    r = tokpack_on_a_full_disk("encode", str(src), "-m", "test_24khz", "-b", "24", "-o", str(out))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"tokpack: {src}: {out}: cannot write: File too large\n"
    assert list(tmp_path.iterdir()) == []


def test_decode_to_a_full_disk(inputs, tmp_path):
    src, out = inputs / "a.tpk", tmp_path / "a.wav"
    r = tokpack_on_a_full_disk("decode", str(src), "-o", str(out))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"tokpack: {src}: {out}: cannot write: File too large\n"
    assert list(tmp_path.iterdir()) == []


def test_batch_to_a_full_disk_fails_each_file(inputs, tmp_path):
    r = tokpack_on_a_full_disk("decode", str(inputs / "a.tpk"), str(inputs / "b.tpk"), "--output-dir", str(tmp_path))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == [
        f"tokpack: {inputs / name}.tpk: {tmp_path / name}.out.wav: cannot write: File too large" for name in "ab"
    ] + ["tokpack: 0 ok, 0 skipped, 2 failed"]
    assert list(tmp_path.iterdir()) == []
