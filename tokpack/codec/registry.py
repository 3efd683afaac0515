"""The models tokpack knows: names, rates, bandwidths, checkpoints.

Pure data, standard library only: importing this module must not import torch, so
``tokpack --help`` and ``tokpack inspect`` stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokpack.errors import ModelError

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
    family: str = "encodec"  # the codec family (the architecture and its code)
    extra: str | None = None  # the pip extra the family needs beyond tokpack's own dependencies

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
        # Same rule as encodec's ResidualVectorQuantizer: floor(bw / (bits * frame_rate)).
        per_codebook_kbps = self.bits_per_code * self.frame_rate / 1000
        return max(1, int(bandwidth // per_codebook_kbps))


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


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ModelError naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelError(f"unknown model {name!r}; known models: {known}") from None


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())
