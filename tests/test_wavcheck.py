"""WAV headers that lie about their data size are named, honest ones are not."""

import struct

import numpy as np
import pytest
import soundfile as sf

from tokpack.codec.wavcheck import data_size_warning


def wav(tmp_path, name="x.wav", endian="FILE", fmt="WAV"):
    path = tmp_path / name
    sf.write(path, np.zeros(1000, np.int16), 8000, subtype="PCM_16", format=fmt, endian=endian)
    return path


def patch_data_size(path, value, endian="<"):
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack(endian + "I", value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("endian, fmt", [("FILE", "WAV"), ("BIG", "WAV"), ("FILE", "RF64")])
def test_honest_files_give_no_warning(tmp_path, endian, fmt):
    assert data_size_warning(wav(tmp_path, endian=endian, fmt=fmt)) is None


def test_truncated_data_is_named(tmp_path):
    path = wav(tmp_path)
    patch_data_size(path, 5000)
    assert data_size_warning(path) == (
        "WAV data chunk declares 5000 bytes but the file holds only 2000; the file is truncated, read the 2000 bytes present"
    )


def test_big_endian_sizes_are_read_big_endian(tmp_path):
    path = wav(tmp_path, endian="BIG")
    patch_data_size(path, 3000, ">")
    assert "declares 3000 bytes but the file holds only 2000" in data_size_warning(path)


def test_unknown_size_is_named(tmp_path):
    path = wav(tmp_path)
    patch_data_size(path, 0xFFFFFFFF)
    assert data_size_warning(path).startswith("WAV data chunk size is 0xFFFFFFFF (unknown length)")


@pytest.mark.parametrize("content", [b"", b"RIFF", b"not a wav at all", b"RIFF\x00\x00\x00\x00WAVEdata"])
def test_other_bytes_are_not_this_checks_business(tmp_path, content):
    path = tmp_path / "y.wav"
    path.write_bytes(content)
    assert data_size_warning(path) is None
    assert data_size_warning(tmp_path / "missing.wav") is None
