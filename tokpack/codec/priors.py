"""CTX priors for a model: neighbour lists from its codebooks, training from audio or
containers (``tokpack train-prior``), and the default prior of a model (shipped ones)."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokpack.codec.registry import MODELS, ModelSpec, get_spec
from tokpack.errors import OutputError, UsageError
from tokpack.formats import MAGIC, ContainerReader, read_container
from tokpack.formats import prior as prior_files
from tokpack.formats.prior import Prior
from tokpack.train import Report, train

NEIGHBOURS = 32  # codes listed per code: covers ~85 % of first-codebook successors


def codebook_neighbours(loaded, n_codebooks: int, n_neighbours: int = NEIGHBOURS) -> list[np.ndarray]:
    """For each of the first codebooks of a LoadedModel, each code's ``n_neighbours``
    nearest codes (itself first) by the squared distance of the codebook vectors; ties
    go to the lower code."""
    out = []
    for embed in loaded.codebooks(n_codebooks):
        embed = np.asarray(embed, dtype=np.float64)
        sq = (embed * embed).sum(axis=1)
        dist = sq[:, np.newaxis] + sq[np.newaxis, :] - 2.0 * embed @ embed.T
        np.fill_diagonal(dist, -np.inf)  # a code is its own nearest, whatever the rounding
        out.append(np.argsort(dist, axis=1, kind="stable")[:, :n_neighbours].astype(np.int64))
    return out


@dataclasses.dataclass
class TrainResult:
    prior: Prior
    report: Report
    model_id: str
    files: int
    seconds: float  # of audio (frames / frame rate)
    sha256: str
    output: str


def train_prior(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                model: str | None = None, weights=None, threads: int | None = None,
                n_neighbours: int = NEIGHBOURS, overwrite: bool = False) -> TrainResult:
    """Train a prior on ``inputs`` (audio files, coded at the model's highest bandwidth,
    or .tpk containers of the model) and write it to ``output`` (an existing one is an
    OutputError, before any work, unless ``overwrite``)."""
    from tokpack._io import atomic_write

    if not overwrite and os.path.lexists(output):
        raise OutputError("already exists", path=os.fsdecode(output))
    from tokpack.codec import engine
    from tokpack.codec.weights import load_model

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UsageError("no input files")
    containers = [p for p in inputs if _is_container(p)]
    if model is None:
        if not containers:
            raise UsageError("audio inputs need a model (-m)")
        first = ContainerReader(containers[0]).header
        if first.tokens_only:
            return _train_tokens_only(inputs, containers, first, output, n_neighbours, overwrite)
        model = first.model_id
    spec = get_spec(model)
    loaded = load_model(spec.name, weights=weights)
    files = []
    for path in inputs:
        if path in containers:
            container = read_container(path)
            _check_container(container.header, spec, loaded.weights_sha256, path)
            files.append(container.tokens)
            continue
        buffer = io.BytesIO()
        engine.encode(path, buffer, model=loaded, bandwidth=max(spec.bandwidths),
                      threads=threads, coder="pack")
        buffer.seek(0)
        files.append(read_container(buffer).tokens)
    n_codebooks = min(f.shape[1] for f in files)
    neighbours = codebook_neighbours(loaded, n_codebooks, n_neighbours)
    prior, report = train(files, codebook_size=spec.codebook_size, model_id=spec.name,
                          weights_sha256=loaded.weights_sha256, neighbours=neighbours,
                          frames_per_chunk=spec.frames_per_chunk)
    with atomic_write(output, overwrite=overwrite) as f:
        f.write(prior.file_bytes)
    frames = sum(f.shape[0] * f.shape[2] for f in files)
    return TrainResult(prior, report, spec.name, len(files), frames / spec.frame_rate,
                       prior.sha256.hex(), os.fspath(output))


def _train_tokens_only(inputs, containers, first, output, n_neighbours: int,
                       overwrite: bool) -> TrainResult:
    """A prior for tokens-only containers (tokpack pack) of one codec: no model, so the
    neighbour lists come from the tokens (the codes that most often follow each code)."""
    from tokpack._io import atomic_write
    from tokpack.train import successor_neighbours

    if len(containers) != len(inputs):
        raise UsageError(f"{next(p for p in inputs if p not in containers)}: tokens-only containers "
                         f"({first.model_id}) train without a model: give containers only")
    files = []
    for path in containers:
        container = read_container(path)
        h = container.header
        if not h.tokens_only or (h.model_id, h.codebook_size) != (first.model_id, first.codebook_size):
            raise UsageError(f"{path}: not tokens of {first.model_id} with {first.codebook_size} codes "
                             "like the first container")
        files.append(container.tokens)
    n_codebooks = min(f.shape[1] for f in files)
    neighbours = successor_neighbours(files, n_codebooks, first.codebook_size, n_neighbours)
    prior, report = train(files, codebook_size=first.codebook_size, model_id=first.model_id,
                          weights_sha256=first.weights_sha256, neighbours=neighbours,
                          frames_per_chunk=first.frames_per_chunk)
    with atomic_write(output, overwrite=overwrite) as f:
        f.write(prior.file_bytes)
    frames = sum(f.shape[0] * f.shape[2] for f in files)
    return TrainResult(prior, report, first.model_id, len(files), frames / first.frame_rate,
                       prior.sha256.hex(), os.fspath(output))


def _is_container(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _check_container(header, spec: ModelSpec, weights_sha256: bytes, path: Path) -> None:
    if header.model_id != spec.name or header.weights_sha256 != weights_sha256:
        raise UsageError(f"{path}: made with {header.model_id} weights "
                         f"{header.weights_sha256.hex()[:12]}, not {spec.name} "
                         f"{weights_sha256.hex()[:12]}")


def prior_weights(model_id: str, weights_sha256: bytes) -> set[bytes]:
    """The ``weights_sha256`` a default prior of these weights may record: theirs, and for a
    test model the digest its recipe builds (testmodels.REFERENCE_SHA256). The recipe
    builds the same weights on every CPU measured; if a build ever differed by a rounding
    (testmodels' module doc), its shipped prior would still fit it, and still apply."""
    found = {weights_sha256}
    spec = MODELS.get(model_id)
    if spec is not None and spec.is_test:
        from tokpack.codec.testmodels import REFERENCE_SHA256

        found.add(bytes.fromhex(REFERENCE_SHA256[model_id]))
    return found


def default_prior(model_id: str, weights_sha256: bytes) -> Prior | None:
    """The prior made for these weights (:func:`prior_weights`) among ``MODEL*.tpp`` in
    $TOKPACK_PRIOR_PATH and the shipped ones, if any; only headers are read until one fits."""
    wanted = prior_weights(model_id, weights_sha256)
    for directory in prior_files.default_directories():
        for path in sorted(Path(directory).glob(f"{model_id}*.tpp")):
            header = prior_files.read_header(path)
            if header.model_id == model_id and header.weights_sha256 in wanted:
                return prior_files.load(path)
    return None


def choose_prior(choice: str | os.PathLike | None, model_id: str,
                 weights_sha256: bytes) -> Prior | None:
    """``--prior``: None/"auto" -> the default prior of the weights (None if there is none:
    the caller takes the generic prior, engine._fitting_prior); "uniform"/"none" -> None
    (the built-in uniform prior); else a .tpp path ("generic" is the caller's)."""
    if choice is None or choice == "auto":
        return default_prior(model_id, weights_sha256)
    if choice in ("uniform", "none"):
        return None
    return prior_files.load(choice)


def check_tpk_options(coder: str, prior) -> None:
    """UsageError for an --entropy/--prior pair a .tpk container cannot take."""
    from tokpack.formats.coding import CODER_CHOICES

    if coder not in CODER_CHOICES:
        hint = " (EnCodec's LM codes .ecdc files: --format ecdc)" if coder == "encodec-lm" else ""
        raise UsageError(f"--entropy {coder} is not a .tpk coder{hint}")
    if coder not in ("auto", "ctx") and prior not in (None, "auto"):
        raise UsageError(f"--prior is for --entropy auto or ctx, not {coder}")
