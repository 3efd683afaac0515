"""The model registry: pure data, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokpack.codec.registry import DEFAULT_MODEL, MODELS, get_spec
from tokpack.errors import ModelError


def test_known_models():
    assert list(MODELS) == ["encodec_24khz", "encodec_48khz", "test_24khz", "test_48khz",
                            "mimi", "dac_44khz", "dac_24khz", "dac_16khz", "test_mimi",
                            "test_dac_44khz"]
    assert DEFAULT_MODEL == "encodec_24khz"
    assert get_spec(DEFAULT_MODEL).default_bandwidth == 6.0


def test_transformers_family_specs():
    mimi, dac = get_spec("mimi"), get_spec("dac_44khz")
    assert (mimi.family, mimi.extra, mimi.repo_id) == ("mimi", "codecs", "kyutai/mimi")
    assert (mimi.sample_rate, mimi.channels, mimi.frame_rate, mimi.codebook_size) == (24_000, 1, 12.5, 2048)
    assert [mimi.n_codebooks(b) for b in mimi.bandwidths] == [4, 8, 16, 32]
    assert mimi.n_codebooks(mimi.default_bandwidth) == 8  # as Moshi uses
    assert mimi.url == "https://huggingface.co/kyutai/mimi/resolve/main/model.safetensors"
    assert (dac.sample_rate, dac.hop_length, dac.codebook_size, dac.causal) == (44_100, 512, 1024, False)
    assert dac.n_codebooks(dac.default_bandwidth) == dac.max_codebooks == 9
    assert dac.bandwidths == (1.72, 3.45, 5.17, 7.75)
    for name in ("test_mimi", "test_dac_44khz"):
        test, official = get_spec(name), get_spec(name.removeprefix("test_"))
        assert test.is_test and test.repo_id is None
        assert (test.sample_rate, test.hop_length, test.codebooks, test.family) == (
            official.sample_rate, official.hop_length, official.codebooks, official.family)


def test_official_specs():
    s24, s48 = get_spec("encodec_24khz"), get_spec("encodec_48khz")
    assert (s24.sample_rate, s24.channels, s24.causal, s24.frame_rate) == (24_000, 1, True, 75)
    assert s24.bandwidths == (1.5, 3.0, 6.0, 12.0, 24.0)
    assert s24.checkpoint == "encodec_24khz-d7cc33bc.th"
    assert s24.url == "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
    assert (s24.segment_length, s24.segment_stride, s24.frames_per_chunk) == (0, 0, 750)
    assert (s48.sample_rate, s48.channels, s48.causal, s48.frame_rate) == (48_000, 2, False, 150)
    assert s48.bandwidths == (3.0, 6.0, 12.0, 24.0)
    assert s48.checkpoint == "encodec_48khz-7e698e3e.th"
    assert (s48.segment_length, s48.segment_stride, s48.frames_per_chunk) == (48_000, 47_520, 1500)
    for spec in (s24, s48):
        assert (spec.hop_length, spec.codebook_size, spec.is_test) == (320, 1024, False)


@pytest.mark.parametrize("test_name, official", [("test_24khz", "encodec_24khz"),
                                                 ("test_48khz", "encodec_48khz")])
def test_test_models_share_the_architecture(test_name, official):
    t, o = get_spec(test_name), get_spec(official)
    assert t.is_test and t.checkpoint is None and t.url is None
    for field in ("sample_rate", "channels", "bandwidths", "causal", "segment_length",
                  "segment_stride", "hop_length", "codebook_size", "frames_per_chunk"):
        assert getattr(t, field) == getattr(o, field), field
    assert "not speech" in t.description


@pytest.mark.parametrize("name, table", [
    ("encodec_24khz", {1.5: 2, 3: 4, 6: 8, 12: 16, 24: 32}),
    ("encodec_48khz", {3: 2, 6: 4, 12: 8, 24: 16}),
])
def test_n_codebooks(name, table):
    spec = get_spec(name)
    assert {bw: spec.n_codebooks(bw) for bw in table} == table
    assert spec.max_codebooks == max(table.values())


def test_bad_bandwidth_lists_the_valid_ones():
    with pytest.raises(ModelError) as err:
        get_spec("encodec_48khz").n_codebooks(1.5)
    assert str(err.value) == ("model encodec_48khz has no bandwidth 1.5 kbps; "
                              "choose one of 3, 6, 12, 24")


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelError) as err:
        get_spec("encodec_96khz")
    assert str(err.value) == ("unknown model 'encodec_96khz'; known models: encodec_24khz, "
                              "encodec_48khz, test_24khz, test_48khz, mimi, dac_44khz, "
                              "dac_24khz, dac_16khz, test_mimi, test_dac_44khz")


def test_codec_package_imports_without_torch():
    code = (
        "import sys\n"
        "import tokpack.codec, tokpack.codec.registry, tokpack.codec.weights\n"
        "import tokpack.codec.audio, tokpack.codec.engine, tokpack.codec.channels\n"
        "import tokpack.codecs.encodec.framing, tokpack.codec.testmodels, tokpack.codecs.encodec.architecture\n"
        "import tokpack.codecs, tokpack.codecs.base, tokpack.codecs.encodec, tokpack.codecs.mimi\n"
        "import tokpack.codecs.dac, tokpack.codecs.hf\n"
        "from tokpack.codec.weights import torch_hub_dir, tokpack_cache_dir\n"
        "torch_hub_dir(); tokpack_cache_dir()\n"
        "heavy = ('torch', 'torchaudio', 'encodec', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
