"""The models tokpack knows: names, rates, bandwidths, checkpoints.

Pure data, standard library only: importing this module must not import torch, so
``tokpack --help`` and ``tokpack inspect`` stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokpack.errors import ModelError, UsageError

#: Where Meta publishes the EnCodec v0 checkpoints (torch hub layout).
CHECKPOINT_ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"

DEFAULT_MODEL = "encodec_24khz"


@dataclass(frozen=True)
class ModelSpec:
    """Everything tokpack needs to know about a codec model before loading it.

    ``segment_length``/``segment_stride`` are in samples at the model rate; 0 means the
    model encodes the whole signal as one sequence (the causal 24 kHz model).
    """

    name: str
    sample_rate: int
    channels: int
    bandwidths: tuple[float, ...]
    default_bandwidth: float
    causal: bool
    checkpoint: str | None
    url: str | None
    is_test: bool
    description: str
    hop_length: int = 320
    codebook_size: int = 1024
    segment_length: int = 0
    segment_stride: int = 0
    #: frames per container chunk: 10 s of tokens (whole segments when segmented)
    frames_per_chunk: int = 750
    family: str = "encodec"  # the codec family (tokpack.codecs.<family>)
    extra: str | None = None  # the pip extra the family needs beyond tokpack's own dependencies
    #: codebooks used at each of ``bandwidths`` (same order); empty: EnCodec's rule
    codebooks: tuple[int, ...] = ()
    #: the Hugging Face repository of the official weights (families loaded by transformers)
    repo_id: str | None = None

    @property
    def frame_rate(self) -> float:
        """Token frames per second (75 for 24 kHz, 150 for 48 kHz)."""
        return self.sample_rate / self.hop_length

    @property
    def bits_per_code(self) -> int:
        return (self.codebook_size - 1).bit_length()

    @property
    def max_codebooks(self) -> int:
        return self.n_codebooks(max(self.bandwidths))

    @property
    def segmented(self) -> bool:
        return self.segment_length > 0

    def n_codebooks(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps; ModelError for a bandwidth the model lacks."""
        if bandwidth not in self.bandwidths:
            valid = ", ".join(format_kbps(b) for b in self.bandwidths)
            raise ModelError(
                f"model {self.name} has no bandwidth {format_kbps(bandwidth)} kbps; "
                f"choose one of {valid}"
            )
        if self.codebooks:
            return self.codebooks[self.bandwidths.index(bandwidth)]
        # Same rule as encodec's ResidualVectorQuantizer: floor(bw / (bits * frame_rate)).
        per_codebook_kbps = self.bits_per_code * self.frame_rate / 1000
        return max(1, int(bandwidth // per_codebook_kbps))


def check_live(spec: ModelSpec) -> None:
    """UsageError, saying why in one line, unless ``spec`` can run live (a causal model)."""
    if spec.causal:
        return
    if spec.segmented:
        why = (f"it encodes {spec.segment_length / spec.sample_rate:g} s segments, each "
               "normalised as a whole")
    else:
        why = "its convolutions look ahead (it is not causal)"
    raise UsageError(f"model {spec.name} cannot run live: {why}; use a causal model "
                     f"({', '.join(n for n, m in MODELS.items() if m.causal)})")


def format_kbps(bandwidth: float) -> str:
    """1.5 -> '1.5', 6.0 -> '6'."""
    return f"{bandwidth:g}"


_24K = {"sample_rate": 24_000, "channels": 1, "bandwidths": (1.5, 3.0, 6.0, 12.0, 24.0),
        "default_bandwidth": 6.0, "causal": True, "frames_per_chunk": 750}
_48K = {"sample_rate": 48_000, "channels": 2, "bandwidths": (3.0, 6.0, 12.0, 24.0),
        "default_bandwidth": 6.0, "causal": False, "segment_length": 48_000,
        "segment_stride": 47_520, "frames_per_chunk": 1500}

_TEST_NOTE = (
    "Seeded random weights with k-means codebooks, built locally in seconds. For "
    "offline CI and pipeline tests only: its audio output is not speech, and its "
    "quality says nothing about EnCodec's."
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="encodec_24khz", **_24K, is_test=False,
            checkpoint="encodec_24khz-d7cc33bc.th",
            url=CHECKPOINT_ROOT_URL + "encodec_24khz-d7cc33bc.th",
            description="EnCodec 24 kHz mono, causal, 75 frames/s, 1.5-24 kbps (Meta, MIT).",
        ),
        ModelSpec(
            name="encodec_48khz", **_48K, is_test=False,
            checkpoint="encodec_48khz-7e698e3e.th",
            url=CHECKPOINT_ROOT_URL + "encodec_48khz-7e698e3e.th",
            description="EnCodec 48 kHz stereo, 1 s segments, 150 frames/s, 3-24 kbps (Meta, MIT).",
        ),
        ModelSpec(
            name="test_24khz", **_24K, is_test=True, checkpoint=None, url=None,
            description="Test model with the encodec_24khz architecture. " + _TEST_NOTE,
        ),
        ModelSpec(
            name="test_48khz", **_48K, is_test=True, checkpoint=None, url=None,
            description="Test model with the encodec_48khz architecture. " + _TEST_NOTE,
        ),
    )
}


HF_ROOT_URL = "https://huggingface.co/"
#: the weights file of a Hugging Face model repository, and of a test model's build
HF_WEIGHTS_FILE = "model.safetensors"


def _hf(repo_id: str) -> dict:
    return {"repo_id": repo_id, "checkpoint": HF_WEIGHTS_FILE,
            "url": f"{HF_ROOT_URL}{repo_id}/resolve/main/{HF_WEIGHTS_FILE}"}


def _kbps(n_codebooks: int, frame_rate: float, codebook_size: int) -> float:
    """The bandwidth of ``n_codebooks`` codebooks, to 2 decimals (what users type)."""
    return round(n_codebooks * frame_rate * (codebook_size - 1).bit_length() / 1000, 2)


def _rates(frame_rate: float, codebook_size: int, counts: tuple[int, ...], default: int) -> dict:
    bandwidths = tuple(_kbps(n, frame_rate, codebook_size) for n in counts)
    return {"bandwidths": bandwidths, "codebooks": counts,
            "default_bandwidth": bandwidths[counts.index(default)]}


#: Kyutai's Mimi: 24 kHz mono, causal, 12.5 frames/s of 2048-entry codebooks, up to 32
#: (Moshi uses 8: the default)
_MIMI = {"sample_rate": 24_000, "channels": 1, "causal": True, "hop_length": 1920,
         "codebook_size": 2048, "frames_per_chunk": 125, "family": "mimi", "extra": "codecs",
         **_rates(12.5, 2048, (4, 8, 16, 32), 8)}
#: Descript's DAC: mono, not causal (windowed with overlap), 1024-entry codebooks
_DAC44 = {"sample_rate": 44_100, "channels": 1, "causal": False, "hop_length": 512,
          "codebook_size": 1024, "frames_per_chunk": 860, "family": "dac", "extra": "codecs",
          **_rates(44_100 / 512, 1024, (2, 4, 6, 9), 9)}
_DAC24 = {"sample_rate": 24_000, "channels": 1, "causal": False, "hop_length": 320,
          "codebook_size": 1024, "frames_per_chunk": 750, "family": "dac", "extra": "codecs",
          **_rates(75.0, 1024, (8, 16, 32), 32)}
_DAC16 = {"sample_rate": 16_000, "channels": 1, "causal": False, "hop_length": 320,
          "codebook_size": 1024, "frames_per_chunk": 500, "family": "dac", "extra": "codecs",
          **_rates(50.0, 1024, (4, 8, 12), 12)}

_TEST_NOTE_HF = (
    "Seeded random weights with k-means codebooks, built locally in seconds. For offline "
    "CI and pipeline tests only: its audio output is not speech, and its quality says "
    "nothing about {}'s."
)

for spec in (
    ModelSpec(name="mimi", **_MIMI, is_test=False, **_hf("kyutai/mimi"),
              description="Mimi 24 kHz mono, causal, 12.5 frames/s, 4-32 codebooks of 2048 "
                          "(Kyutai, CC-BY 4.0)."),
    ModelSpec(name="dac_44khz", **_DAC44, is_test=False, **_hf("descript/dac_44khz"),
              description="DAC 44.1 kHz mono, 86 frames/s, up to 9 codebooks of 1024 "
                          "(Descript, MIT)."),
    ModelSpec(name="dac_24khz", **_DAC24, is_test=False, **_hf("descript/dac_24khz"),
              description="DAC 24 kHz mono, 75 frames/s, up to 32 codebooks of 1024 "
                          "(Descript, MIT)."),
    ModelSpec(name="dac_16khz", **_DAC16, is_test=False, **_hf("descript/dac_16khz"),
              description="DAC 16 kHz mono, 50 frames/s, up to 12 codebooks of 1024 "
                          "(Descript, MIT)."),
    ModelSpec(name="test_mimi", **_MIMI, is_test=True, checkpoint=None, url=None,
              description="Test model with the mimi architecture. " + _TEST_NOTE_HF.format("Mimi")),
    ModelSpec(name="test_dac_44khz", **_DAC44, is_test=True, checkpoint=None, url=None,
              description="Test model with the dac_44khz architecture. "
                          + _TEST_NOTE_HF.format("DAC")),
):
    MODELS[spec.name] = spec


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ModelError naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelError(f"unknown model {name!r}; known models: {known}") from None


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())
