"""Models built by ``transformers`` (Mimi, DAC): loading a weights file the way the Hub's
own loader does, with tokpack's checks (imports torch and transformers).

The architecture is fixed by the model's name (the config in the family's module, the
hub's config.json values), as for EnCodec; the weights are a ``model.safetensors`` file
(the Hub's name: the HF cache's copy, ``--weights FILE``, or the file in ``--weights
DIR``). ``from_pretrained`` reads it from a temporary folder holding that config and a
link to the file, so the Hub's checkpoint layout (Mimi's flat ``encoder.layers`` names,
renamed by transformers' conversion mapping) and a test model's state dict load alike,
and every key must be there: a missing, unexpected or misshapen one is a ModelError,
never silently random.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from tokpack.codec.registry import HF_WEIGHTS_FILE, ModelSpec
from tokpack.errors import ModelError


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' warnings and progress bars off, restored afterwards."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_pretrained(cls, config, path: Path, spec: ModelSpec, *, verified: bool = False):
    """``cls.from_pretrained`` on the weights file ``path`` with ``config``; eval mode.
    ``verified``: this version of the file passed the NaN/inf check before
    (``weights.checked_once``), which is then skipped.

    ModelError (one line) when the file is not a safetensors file of this architecture:
    keys missing, unexpected or of the wrong shape, values NaN or infinite.

    Also sets the C heap to keep freed blocks (``memory.keep_freed_memory``): these models
    allocate and free activations of up to ~30 MB per layer (DAC's windows are sized to
    stay under the 32 MB above which glibc always maps, and unmaps, a block), and with
    glibc's defaults every layer faulted its output's pages in again. Measured, 20 s of
    audio, whole processes: DAC 44.1 kHz encode 50.6 s with 7.0 M page faults (31.7 s of
    them system time), Mimi encode 16.0 s / decode 16.0 s against 13.7 s / 14.2 s kept
    (docs/PERFORMANCE.md)."""
    import torch

    from tokpack.codec.memory import keep_freed_memory
    from tokpack.codec.weights import check_weights_file, one_line

    keep_freed_memory()
    check_weights_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":  # u64 header length, then its JSON
        raise ModelError(f"not a safetensors file (weights of {spec.name} are the Hub's "
                         f"{HF_WEIGHTS_FILE})", path=str(path))
    with tempfile.TemporaryDirectory(prefix="tokpack-weights-") as folder:
        config.save_pretrained(folder)
        os.symlink(os.path.abspath(path), os.path.join(folder, HF_WEIGHTS_FILE))
        try:
            with _quiet_transformers():
                model, info = cls.from_pretrained(folder, local_files_only=True,
                                                  output_loading_info=True)
        except Exception as exc:  # safetensors and loader errors all mean: not these weights
            raise ModelError(f"cannot load weights: {one_line(exc)[:300]}", path=str(path)) from None
    problems = []
    for label, key in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"),
                       ("wrong shape", "mismatched_keys")):
        keys = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if keys:
            shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    if problems:
        raise ModelError(f"weights do not fit the {spec.name} architecture: " + "; ".join(problems),
                         path=str(path))
    for key, value in model.state_dict().items():
        if not verified and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"weights hold NaN or infinite values ({key})", path=str(path))
    return model.eval()


def load_checked(cls, config, path: Path, spec: ModelSpec):
    """(model, weights_sha256): :func:`load_pretrained` and the hash of the model's state,
    the NaN/inf check and the hash done once per version of the file and remembered
    (``weights.checked_once``; Mimi's 96 M values: ~0.6 s of each load, DAC 44.1 kHz's
    77 M: ~0.5 s)."""
    from tokpack.codec.weights import checked_once, weights_sha256

    return checked_once(path, lambda verified: load_pretrained(cls, config, path, spec, verified=verified),
                        lambda model: weights_sha256(model.state_dict()), kind=spec.name)


def save_state(state: dict) -> bytes:
    """A state dict as safetensors bytes (how test models are cached)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous().clone() for k, v in state.items()})
