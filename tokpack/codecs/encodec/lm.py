"""EnCodec's language model as an entropy coder for tokens (``--entropy encodec-lm``).

encodec 0.1.1 ships one small transformer per model (``encodec_lm_24khz-1608e3c0.th``,
``encodec_lm_48khz-7add9fc3.th``) that predicts the codes of token frame t from the
frames before it; ``encodec.compress(..., use_lm=True)`` codes every code with its
arithmetic coder under that prediction. :func:`lm_encode` and :func:`lm_decode` do
exactly that, with encodec's own ``LMModel``, ``ArithmeticCoder``/``ArithmeticDecoder``
and ``build_stable_quantized_cdf``: for the same codes and LM the bytes are the ones
encodec writes for one frame (a whole 24 kHz file, or one 1 s segment at 48 kHz).

One call codes one independent run of tokens ``[n_codebooks, n_frames]``: the LM starts
afresh (no context) and the coder ends byte-aligned. :class:`LMEncoder` and
:class:`LMDecoder` are the same coding a few frames at a time.

LM weights (:func:`resolve_lm_weights`), searched in order:

1. the explicit ``lm_weights`` path (``--lm-weights PATH``);
2. the ``TOKPACK_LM_WEIGHTS`` environment variable;
3. official models: torch hub's ``<hub dir>/checkpoints/encodec_lm_24khz-1608e3c0.th``
   (where encodec's ``get_lm_model`` keeps it); test models: a seeded random LM of the
   official architecture, built once into the test-model cache (near-uniform
   predictions: it codes about as small as bit-packing and says nothing of EnCodec's LM);
4. official LMs are then downloaded into that cache (:func:`load_lm`; never by
   :func:`lm_available`).

The LM runs on one CPU thread: its probabilities differ in the ninth digit between
thread counts, which can move a quantised CDF step and make a stream undecodable
elsewhere; one thread is also the fastest for so small a model.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tokpack.codec.registry import CHECKPOINT_ROOT_URL, ModelSpec, get_spec
from tokpack.errors import FormatError, ModelError, Truncated, WeightsNotFound

if TYPE_CHECKING:
    import torch
    from encodec.model import LMModel

LM_WEIGHTS_ENV = "TOKPACK_LM_WEIGHTS"

#: encodec 0.1.1's LM checkpoints (``EncodecModel.get_lm_model``), by model
LM_CHECKPOINTS = {
    "encodec_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_48khz": "encodec_lm_48khz-7add9fc3.th",
}
#: the architecture ``get_lm_model`` builds: LMModel(n_q, bins, num_layers=5, dim=200,
#: past_context=int(3.5 * frame_rate))
LM_LAYERS = 5
LM_DIM = 200
LM_PAST_SECONDS = 3.5
#: ``ArithmeticCoder``'s default, which encodec.compress uses
TOTAL_RANGE_BITS = 24
#: the test models' LMs: seeded initialisation
TEST_LM_SEED = 20240602
LM_THREADS = 1


def _spec(model: str | ModelSpec) -> ModelSpec:
    return get_spec(model) if isinstance(model, str) else model


def lm_checkpoint(model: str | ModelSpec) -> str:
    """The official LM file name of ``model``; ModelError for a model without one."""
    spec = _spec(model)
    try:
        return LM_CHECKPOINTS[spec.name]
    except KeyError:
        raise ModelError(f"model {spec.name} has no EnCodec language model") from None


def lm_cache_path(model: str | ModelSpec) -> Path:
    """Where torch hub keeps (and tokpack looks for) an official LM checkpoint."""
    from tokpack.codec.weights import torch_hub_dir

    return torch_hub_dir() / "checkpoints" / lm_checkpoint(model)


def resolve_lm_weights(model: str | ModelSpec, lm_weights: str | os.PathLike | None = None,
                       *, download: bool = True) -> Path:
    """Path of the LM state dict of ``model`` (order in the module doc).

    WeightsNotFound (one line: model, file, URL, how to provide it) when it is neither
    given, cached nor (with ``download``) downloadable.
    """
    from tokpack.codec import weights

    spec = _spec(model)
    given = weights.explicit_file(f"LM weights file for {spec.name}", (
        ("--lm-weights", lm_weights), (LM_WEIGHTS_ENV, os.getenv(LM_WEIGHTS_ENV))))
    if given is not None:
        return given
    if spec.is_test:
        return weights.cached_build(f"{spec.name}_lm", lambda: build_lm(spec).state_dict())
    name = lm_checkpoint(spec)
    cached = lm_cache_path(spec)
    if cached.is_file():
        return cached
    what = f"LM weights for model {spec.name}"
    if not download:
        raise WeightsNotFound(f"{what} not found: {name} is not cached; put the file at "
                              f"{cached}, or pass --lm-weights PATH, or set {LM_WEIGHTS_ENV}=PATH")
    weights.download_checkpoint(CHECKPOINT_ROOT_URL + name, cached, what=what,
                                option="--lm-weights", env=LM_WEIGHTS_ENV)
    return cached


def lm_available(model: str | ModelSpec, lm_weights: str | os.PathLike | None = None) -> bool:
    """Whether the LM of ``model`` can be had without a download (given, cached, or a
    test model's). Cheap: no torch import, nothing loaded or built."""
    spec = _spec(model)
    if spec.is_test:
        return True
    try:
        resolve_lm_weights(spec, lm_weights, download=False)
    except ModelError:  # WeightsNotFound, or a model without an LM
        return False
    return True


def build_lm(spec: ModelSpec, *, seed: int = TEST_LM_SEED) -> LMModel:
    """``spec``'s LM network as ``get_lm_model`` builds it, initialised from ``seed`` (the
    test models' LM; the caller's RNG is left as it was), in eval mode."""
    import torch
    from encodec.model import LMModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LMModel(spec.max_codebooks, spec.codebook_size, num_layers=LM_LAYERS, dim=LM_DIM,
                     past_context=int(LM_PAST_SECONDS * _frame_rate(spec)))
    return lm.eval()


def _frame_rate(spec: ModelSpec) -> int:
    """encodec's ``EncodecModel.frame_rate``: ceil(sample rate / hop)."""
    return math.ceil(spec.sample_rate / spec.hop_length)


@dataclass
class LoadedLM:
    """A ready LM: the model it belongs to, the network (eval, CPU), its weights."""

    spec: ModelSpec
    lm: LMModel
    weights_sha256: bytes  # weights.weights_sha256 of the state dict
    weights_path: Path

    @property
    def max_codebooks(self) -> int:
        return self.lm.n_q


_LOADED: dict[tuple, LoadedLM] = {}  # per process, by model and file identity


def load_lm(model: str | ModelSpec, lm_weights: str | os.PathLike | None = None) -> LoadedLM:
    """Resolve, load, check and hash the LM of ``model``; loaded once per process (per
    file path, size and modification time)."""
    import torch

    from tokpack.codec.weights import check_fits, load_checked_state

    spec = _spec(model)
    path = resolve_lm_weights(spec, lm_weights)
    stat = path.stat()
    key = (spec.name, str(path), stat.st_size, stat.st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    with torch.device("meta"):  # shapes only; the file's tensors become the parameters
        lm = build_lm(spec)
    state, digest = load_checked_state(path)
    check_fits({k: tuple(v.shape) for k, v in lm.state_dict().items()}, state,
               f"the {spec.name} LM architecture", path)
    try:
        lm.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"cannot load LM weights: {' '.join(str(exc).split())[:300]}",
                         path=str(path)) from None
    _LOADED[key] = LoadedLM(spec, lm.eval(), digest, path)
    return _LOADED[key]


def _loaded(lm: LoadedLM | str | ModelSpec, lm_weights) -> LoadedLM:
    return lm if isinstance(lm, LoadedLM) else load_lm(lm, lm_weights)


class _LMStep:
    """The LM run frame by frame as encodec.compress runs it: frame t's distribution comes
    from the codes of frames < t (1 + code; 0 before the first frame). Call it inside
    :func:`_lm_context`."""

    def __init__(self, loaded: LoadedLM, n_codebooks: int) -> None:
        import torch

        if not 1 <= n_codebooks <= loaded.max_codebooks:
            raise ValueError(f"n_codebooks must be 1..{loaded.max_codebooks}, got {n_codebooks}")
        self.lm = loaded.lm
        self.card = loaded.spec.codebook_size
        self.n_codebooks = n_codebooks
        self.states = None
        self.offset = 0
        self.input = torch.zeros(1, n_codebooks, 1, dtype=torch.long)

    def cdfs(self) -> list[np.ndarray]:
        """The quantised CDF of every codebook for the next frame (int64 [card] each)."""
        from encodec.quantization.ac import build_stable_quantized_cdf

        probas, self.states, self.offset = self.lm(self.input, self.states, self.offset)
        return [build_stable_quantized_cdf(probas[0, :, k, 0], TOTAL_RANGE_BITS,
                                           check=False).numpy()
                for k in range(self.n_codebooks)]

    def advance(self, codes: list[int]) -> None:
        """Codes of the frame just coded: the LM's input for the next one."""
        import torch

        self.input = 1 + torch.tensor(codes, dtype=torch.long).view(1, -1, 1)


class LMEncoder:
    """Codes frames of tokens into ``fo`` with the LM, a few frames at a time.

    ``write(codes [n_codebooks, n])`` as often as needed, then ``flush()`` once: the
    result is what :func:`lm_encode` gives for all the frames together.
    """

    def __init__(self, lm: LoadedLM, fo: BinaryIO, n_codebooks: int) -> None:
        from encodec.quantization.ac import ArithmeticCoder

        self._step = _LMStep(lm, n_codebooks)
        self._coder = ArithmeticCoder(fo, TOTAL_RANGE_BITS)

    def write(self, codes: np.ndarray) -> None:
        codes = _checked_codes(codes, self._step.n_codebooks, self._step.card)
        with _lm_context():
            for frame in codes.T.tolist():
                for value, cdf in zip(frame, self._step.cdfs()):
                    self._coder.push(value, cdf)
                self._step.advance(frame)
                _forget_debug(self._coder)

    def flush(self) -> None:
        """The last bits, padded to a byte (as ``ArithmeticCoder.flush``)."""
        self._coder.flush()


class LMDecoder:
    """Reads frames of LM-coded tokens from ``fo``; the inverse of :class:`LMEncoder`.

    Reads no byte past the end of the coded run (the coder's last byte), so a caller
    can go on reading what follows it in ``fo``.
    """

    def __init__(self, lm: LoadedLM, fo: BinaryIO, n_codebooks: int) -> None:
        from encodec.quantization.ac import ArithmeticDecoder

        self._step = _LMStep(lm, n_codebooks)
        self._decoder = ArithmeticDecoder(fo, TOTAL_RANGE_BITS)
        self.frames_read = 0

    def read(self, n_frames: int) -> np.ndarray:
        """The next ``n_frames`` frames, uint16 [n_codebooks, n_frames]. Truncated when the
        data ends first; FormatError when it cannot be LM-coded tokens."""
        out = np.empty((self._step.n_codebooks, n_frames), dtype=np.uint16)
        with _lm_context():
            for t in range(n_frames):
                out[:, t] = frame = [self._pull(cdf) for cdf in self._step.cdfs()]
                self._step.advance(frame)
                _forget_debug(self._decoder)
                self.frames_read += 1
        return out

    def _pull(self, cdf: np.ndarray) -> int:
        try:
            code = self._decoder.pull(cdf)
        except (RuntimeError, AssertionError, RecursionError):  # no symbol's range holds it
            raise FormatError(f"LM-coded tokens are corrupt at frame {self.frames_read}") from None
        if code is None:
            raise Truncated(f"LM-coded tokens end after {self.frames_read} frames")
        return code


@contextlib.contextmanager
def _lm_context() -> Iterator[None]:
    """One torch thread (see the module doc), no autograd."""
    import torch

    from tokpack.codec.threads import torch_threads

    with torch_threads(LM_THREADS), torch.inference_mode():
        yield


def _forget_debug(coder) -> None:
    """encodec's coders append two debugging tuples per symbol and never drop them:
    ~100 bytes per code, 1.6 GB for an hour at 24 kbps. Nothing reads them."""
    coder._dbg.clear()
    coder._dbg2.clear()


def _checked_codes(codes: np.ndarray, n_codebooks: int, card: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != n_codebooks:
        raise ValueError(f"codes must be [{n_codebooks}, n_frames], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= card):
        raise ValueError(f"codes must be in 0..{card - 1}")
    return codes.astype(np.int64, copy=False)


def lm_encode(lm: LoadedLM | str, codes: np.ndarray, *,
              lm_weights: str | os.PathLike | None = None) -> bytes:
    """Code ``codes`` (integers [n_codebooks, n_frames], n_codebooks up to the model's
    maximum) with the LM of ``lm`` (a model name, loaded once per process, or a LoadedLM).

    One independent run: the LM starts with no context; the bytes end on a byte boundary.
    The same bytes as encodec.compress(use_lm=True) writes for a frame of these codes.
    b"" for 0 frames.
    """
    loaded = _loaded(lm, lm_weights)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [n_codebooks, n_frames], got shape {codes.shape}")
    fo = io.BytesIO()
    encoder = LMEncoder(loaded, fo, codes.shape[0])
    encoder.write(codes)
    encoder.flush()
    return fo.getvalue()


def lm_decode(lm: LoadedLM | str, data: bytes | BinaryIO, n_codebooks: int, n_frames: int, *,
              lm_weights: str | os.PathLike | None = None) -> np.ndarray:
    """The inverse of :func:`lm_encode`: uint16 [n_codebooks, n_frames].

    ``data``: the coded bytes, which must be used up exactly (FormatError naming the
    surplus otherwise), or a binary file object, read only as far as the run goes.
    Truncated if the data ends too soon; FormatError if it is not such a run.
    """
    loaded = _loaded(lm, lm_weights)
    fo = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    tokens = LMDecoder(loaded, fo, n_codebooks).read(n_frames)
    if fo is not data:
        surplus = len(data) - fo.tell()
        if surplus:
            raise FormatError(f"{surplus} bytes left over after {n_frames} LM-coded frames")
    return tokens
