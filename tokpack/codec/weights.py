"""Find, fetch, verify and load model weights.

Order of search for a model's state dict file (:func:`resolve_weights`):

1. the explicit ``weights`` path (``--weights PATH``);
2. the ``TOKPACK_WEIGHTS`` environment variable;
3. the cache: official checkpoints in torch hub's ``<hub dir>/checkpoints/<file>``,
   test models in tokpack's own cache (:func:`tokpack_cache_dir`);
4. official checkpoints are then downloaded into that cache (hash-checked); test models
   are built and saved there.

Every file, official or test, is then loaded by the same code: ``torch.load(...,
weights_only=True)``, checked key by key against the architecture, and hashed with
:func:`weights_sha256` — the hash stored in containers. The checks that read every byte
(the hash a torch hub name promises, no NaN or infinity) and the hash are done once per
version of a file and remembered (:func:`checked_once`).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import struct
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tokpack._io import atomic_write
from tokpack.codec.registry import ModelSpec, get_spec, list_models
from tokpack.codecs.base import LoadedModel
from tokpack.errors import ModelError, WeightsNotFound

if TYPE_CHECKING:
    import torch

_Loaded = TypeVar("_Loaded")

WEIGHTS_ENV = "TOKPACK_WEIGHTS"
CACHE_ENV = "TOKPACK_CACHE"

#: torch hub's rule: a file named ``name-<hex>.ext`` must have a SHA-256 starting with
#: <hex>. We ask for 8+ digits so ordinary names with a short hex-looking word pass.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.[A-Za-z0-9]+$")
# The largest weights file read: the official models are 70-400 MB; a path to something
# far larger (or to a device) is refused before anything is read.
MAX_WEIGHTS_BYTES = 4 * 2**30
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def torch_hub_dir() -> Path:
    """torch.hub.get_dir(), computed without importing torch when torch isn't loaded.

    torch's rule: ``$TORCH_HOME/hub``, TORCH_HOME defaulting to ``$XDG_CACHE_HOME/torch``
    and XDG_CACHE_HOME to ``~/.cache``. If torch is already imported, ask it, so a
    ``torch.hub.set_dir()`` made by the host program is honoured.
    """
    torch = sys.modules.get("torch")
    hub = getattr(torch, "hub", None) if torch is not None else None
    if hub is not None and hasattr(hub, "get_dir"):
        return Path(hub.get_dir())
    home = os.getenv("TORCH_HOME",
                     os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def tokpack_cache_dir() -> Path:
    """``$TOKPACK_CACHE``, else ``$XDG_CACHE_HOME/tokpack``, else ``~/.cache/tokpack``."""
    env = os.getenv(CACHE_ENV)
    if env:
        return Path(os.path.expanduser(env))
    xdg = os.getenv("XDG_CACHE_HOME") or "~/.cache"
    return Path(os.path.expanduser(xdg)) / "tokpack"


def official_cache_path(spec: ModelSpec) -> Path:
    """Where torch hub keeps (and tokpack looks for) an official checkpoint."""
    if spec.checkpoint is None:
        raise ModelError(f"model {spec.name} has no official checkpoint")
    return torch_hub_dir() / "checkpoints" / spec.checkpoint


def describe_models() -> list[dict]:
    """The models tokpack knows, as data (``tokpack models``): rates, codebooks, bandwidths,
    and where the weights come from and whether they are here (no torch import)."""
    rows = []
    for spec in list_models():
        if spec.is_test:
            source = "test model, built here on first use"
            here = any(test_model_dir().glob(f"{glob.escape(spec.name)}-*.*"))
        elif spec.repo_id is not None:
            source = f"official {spec.repo_id} (Hugging Face)"
            here = hf_cached_file(spec.repo_id, spec.checkpoint) is not None
        else:
            source = f"official {spec.checkpoint}"
            here = official_cache_path(spec).is_file()
        rows.append({
            "model": spec.name, "family": spec.family, "extra": spec.extra,
            "sample_rate": spec.sample_rate, "channels": spec.channels,
            "frame_rate_hz": spec.frame_rate, "causal": spec.causal,
            "codebook_size": spec.codebook_size, "max_codebooks": spec.max_codebooks,
            "bandwidths_kbps": list(spec.bandwidths),
            "codebooks": [spec.n_codebooks(b) for b in spec.bandwidths],
            "extra_installed": spec.extra is None or importlib.util.find_spec("transformers") is not None,
            "default_bandwidth_kbps": spec.default_bandwidth,
            "weights": source, "weights_here": here, "description": spec.description,
        })
    return rows


def hf_hub_cache() -> Path:
    """The Hugging Face cache, by huggingface_hub's rule (without importing it):
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, HF_HOME defaulting to
    ``$XDG_CACHE_HOME/huggingface`` and XDG_CACHE_HOME to ``~/.cache``."""
    if os.getenv("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.getenv("HF_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME") or "~/.cache",
                                                "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def hf_offline() -> bool:
    """HF_HUB_OFFLINE (or transformers' TRANSFORMERS_OFFLINE) set to a true value."""
    return any(os.getenv(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of the revision ``main`` of model ``repo_id`` in the Hugging Face cache
    (``models--<org>--<name>/snapshots/<refs/main>/<filename>``), or None."""
    repo = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not revision or "/" in revision or revision.startswith("."):
        return None
    path = repo / "snapshots" / revision / filename
    return path if path.is_file() else None


def test_model_dir() -> Path:
    """Folder of the built test-model files; named after the build recipe's version."""
    from tokpack.codec.testmodels import RECIPE_VERSION

    return tokpack_cache_dir() / f"test-models-v{RECIPE_VERSION}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_hash_in_name(path: Path) -> None:
    """If ``path`` is named ``name-<hex>.ext`` (torch hub style), its SHA-256 must start
    with <hex>; ModelError otherwise. Names without such a prefix are not checked."""
    m = _HASH_IN_NAME.search(path.name)
    if m is None:
        return
    prefix = m.group(1)
    digest = file_sha256(path)
    if not digest.startswith(prefix):
        raise ModelError(
            f"weights file is corrupt or not the expected one: its SHA-256 is "
            f"{digest[:12]}..., but its name promises {prefix}; delete it and try again",
            path=str(path),
        )


def explicit_file(what: str, sources, in_folder: str | None = None) -> Path | None:
    """The first file named by ``sources`` ((option or variable, value) pairs; empty or
    None values skipped), or None; WeightsNotFound if it does not exist. With
    ``in_folder``, a folder may be named instead: its file of that name is meant."""
    for source, value in sources:
        if value is None or value == "":
            continue
        path = Path(os.path.expanduser(os.fspath(value)))
        if in_folder is not None and path.is_dir():
            if not (path / in_folder).is_file():
                raise WeightsNotFound(f"the folder has no {in_folder} (given by {source})",
                                      path=str(path))
            return path / in_folder
        if path.is_dir():
            raise WeightsNotFound(f"{what} is a folder, not a file (given by {source})",
                                  path=str(path))
        if not path.is_file():
            raise WeightsNotFound(f"{what} does not exist (given by {source})", path=str(path))
        return path
    return None


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike | None = None) -> Path:
    """Path of the state dict file for ``spec``; may download or build it (see module doc).

    Raises WeightsNotFound (one line: model, file, URL and how to provide it) when an
    official checkpoint is neither cached nor downloadable, and ModelError when a
    downloaded file fails its hash check.
    """
    given = explicit_file(f"weights file for {spec.name}",
                          (("--weights", weights), (WEIGHTS_ENV, os.getenv(WEIGHTS_ENV))),
                          in_folder=spec.checkpoint if spec.repo_id else None)
    if given is not None:
        return given
    if spec.is_test:
        from tokpack.codecs import family_module

        return family_module(spec.family).cached_test_weights(spec)
    if spec.repo_id is not None:
        return hf_weights(spec)
    cached = official_cache_path(spec)
    if cached.is_file():
        return cached
    download_checkpoint(spec.url, cached, what=f"weights for model {spec.name}",
                        option="--weights", env=WEIGHTS_ENV)
    return cached


def hf_weights(spec: ModelSpec) -> Path:
    """The official weights file of a Hugging Face model: the HF cache's, else downloaded
    into it by huggingface_hub (not when HF_HUB_OFFLINE is set). WeightsNotFound, one
    line naming the repository, the file and how to provide it, when neither works."""
    repo, name = spec.repo_id, spec.checkpoint
    cached = hf_cached_file(repo, name)
    if cached is not None:
        return cached
    fix = (f"run `hf download {repo} {name}` where the Hub is reachable (the cache is "
           f"{hf_hub_cache()}, set by HF_HOME), or pass --weights DIR|FILE, or set "
           f"{WEIGHTS_ENV}=PATH")
    if hf_offline():
        raise WeightsNotFound(f"weights for model {spec.name} not found: {repo}/{name} is not "
                              f"in the Hugging Face cache and HF_HUB_OFFLINE is set; {fix}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hub_logging

    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retry messages are not ours to print
    try:
        return Path(hf_hub_download(repo, name))
    except Exception as exc:  # offline, DNS, HTTP, disk: all mean the file is not here
        # huggingface_hub's "cannot find ... in the local cache" means the Hub did not answer
        why = ("the Hub could not be reached" if "LocalEntryNotFound" in type(exc).__name__
               else one_line(exc)[:200])
        raise WeightsNotFound(f"weights for model {spec.name} not found: {repo}/{name} is not "
                              f"cached and could not be downloaded ({why}); {fix}") from None
    finally:
        hub_logging.set_verbosity(level)


def download_checkpoint(url: str, dst: Path, *, what: str, option: str, env: str) -> None:
    """Download ``url`` to ``dst`` with torch hub, checking the hash its name promises.

    WeightsNotFound (one line: what, the file, the URL, why, and how to provide it:
    ``option`` PATH or ``env``) when it cannot be fetched; ModelError when the hash fails.
    """
    import urllib.error

    import torch.hub

    m = _HASH_IN_NAME.search(dst.name)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url, str(dst), hash_prefix=m.group(1) if m else None, progress=False
        )
    except RuntimeError as exc:  # torch hub's hash check
        raise ModelError(f"download of {url} failed its check: {exc}", path=str(dst))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror  # "Name or service not known", without "[Errno -2]"
        raise WeightsNotFound(
            f"{what} not found: {dst.name} is not cached and could not be downloaded from "
            f"{url} ({one_line(reason)}); put the file at {dst}, or pass {option} PATH, "
            f"or set {env}=PATH"
        ) from None


def one_line(obj: object) -> str:
    return " ".join(str(obj).split()) or type(obj).__name__


def cached_build(stem: str, build: Callable[[], Mapping[str, torch.Tensor]], *,
                 suffix: str = ".th", serialise: Callable[[Mapping], bytes] | None = None) -> Path:
    """``<test model dir>/<stem>-<sha256 prefix><suffix>``: a state dict built offline
    (a test model's, a test LM's), built by ``build()`` and saved on first use
    (``serialise``: state dict -> bytes; torch.save by default)."""
    folder = test_model_dir()
    found = sorted(folder.glob(f"{glob.escape(stem)}-*{suffix}")) if folder.is_dir() else []
    for path in found:
        if _HASH_IN_NAME.search(path.name):
            return path
    if serialise is None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(build(), buf)
        data = buf.getvalue()
    else:
        data = serialise(build())
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)
    return path


def load_checked_state(path: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    """:func:`load_state_dict` and the state's :func:`weights_sha256`, the checks that read
    every byte and the hash done once per version of the file (:func:`checked_once`;
    EnCodec's 24 kHz weights: ~0.2 s of a command's start). The key checks and the safe
    loader run every time."""
    return checked_once(path, lambda verified: load_state_dict(path, verified=verified),
                        weights_sha256)


def checked_once(path: Path, load: Callable[[bool], _Loaded],
                 digest: Callable[[_Loaded], bytes], *, kind: str = "") -> tuple[_Loaded, bytes]:
    """``load(verified)`` of the weights file ``path`` and ``digest`` of what it returned
    (the hash stored in containers), where ``verified`` says this version of the file
    passed before the checks that read every byte (NaN or infinity, the hash a name
    promises), so ``load`` may skip them, and the digest is not computed again.

    A file that passed is remembered in tokpack's cache (``verified/``) by its path, size,
    modification time and inode, as git's index and make decide that a file has not
    changed, and by ``kind`` (what loaded it: its digest is of what ``load`` returns). Any
    change to the file, or a cache that cannot be read or written, means the checks run
    again.
    """
    key = os.fsencode(os.path.abspath(path)) + (b"\0" + kind.encode() if kind else b"")
    memo = tokpack_cache_dir() / "verified" / (hashlib.sha256(key).hexdigest()[:32] + ".json")
    stamp = _file_stamp(path)
    remembered = _recalled_digest(memo, stamp)
    loaded = load(remembered is not None)
    if _file_stamp(path) != stamp:  # replaced while it was being opened: check it all
        remembered, stamp = None, None
        loaded = load(False)
    if remembered is not None:
        return loaded, remembered
    computed = digest(loaded)
    _remember_digest(memo, stamp, computed)
    return loaded, computed


def _file_stamp(path: Path) -> list[int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev]


def _recalled_digest(memo: Path, stamp: list[int] | None) -> bytes | None:
    import json

    if stamp is None:
        return None
    try:
        entry = json.loads(memo.read_text())
        if entry.get("stamp") == stamp:
            return bytes.fromhex(entry["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _remember_digest(memo: Path, stamp: list[int] | None, digest: bytes) -> None:
    import json

    from tokpack.errors import OutputError

    if stamp is None:
        return
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(memo) as f:
            f.write(json.dumps({"stamp": stamp, "weights_sha256": digest.hex()}).encode())
    except (OSError, OutputError):
        pass  # a read-only cache: the checks run again next time


def load_state_dict(path: Path, *, verified: bool = False) -> dict[str, torch.Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with typed errors.
    ``verified``: this version of the file passed the checks that read every byte before
    (:func:`load_checked_state`), so they are skipped."""
    import torch

    import warnings

    if not verified:
        check_hash_in_name(path)
    check_weights_file(path)
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols is not ours
            warnings.simplefilter("ignore")
            # torch's zip format is mapped, not read (the pages a tensor needs are read
            # when it is used); its legacy format (or a file not torch's) is read whole
            state = torch.load(path, map_location="cpu", weights_only=True,
                               mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # pickle, zip and unpickler errors all mean: not weights
        text = str(exc)
        found = _UNSUPPORTED_GLOBAL.search(text)
        if found:  # a pickle that would run code: never loaded
            raise ModelError(
                f"cannot load weights: the file holds Python objects ({found.group(1)}) that "
                "loading would call; tokpack loads plain tensors only",
                path=str(path),
            ) from None
        if "Weights only load failed" in text:  # torch's advice to load unsafely is not ours
            detail = one_line(text.split("WeightsUnpickler error:", 1)[-1].split("Check the", 1)[0])
            raise ModelError(
                "cannot load weights: not a file of plain tensors (torch's safe loader stops at: "
                f"{detail[:120]})",
                path=str(path),
            ) from None
        raise ModelError(f"cannot load weights: {one_line(exc)[:300]}", path=str(path)) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(
            state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError("not a state dict (a mapping of names to tensors)", path=str(path))
    for key, value in state.items():
        if not verified and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"weights hold NaN or infinite values ({key})", path=str(path))
    return dict(state)


def check_weights_file(path: Path) -> None:
    """A regular file of at most MAX_WEIGHTS_BYTES, before anything is read from it."""
    import stat

    try:
        info = os.stat(path)
    except OSError as exc:
        raise ModelError(f"cannot load weights: {exc.strerror}", path=str(path)) from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelError("weights must be a regular file (not a device, pipe or folder)", path=str(path))
    if info.st_size > MAX_WEIGHTS_BYTES:
        raise ModelError(f"{info.st_size} bytes is more than the {MAX_WEIGHTS_BYTES} a weights "
                         "file may have", path=str(path))


def check_fits(expected: Mapping[str, tuple], state: Mapping[str, Any], architecture: str,
               path: Path | None = None) -> None:
    """ModelError if ``state`` does not fit the layout ``expected`` (key -> shape) key for
    key and shape for shape; ``architecture`` names it (``the encodec_24khz architecture``)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if tuple(expected[k]) != tuple(state[k].shape))
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("wrong shape", wrong)):
        if keys:
            shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
            parts.append(f"{len(keys)} {label} key(s): {shown}")
    raise ModelError(
        f"weights do not fit {architecture}: " + "; ".join(parts),
        path=str(path) if path else None,
    )


def weights_sha256(state: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 of a state dict's content, independent of how the file was serialised.

    Keys in sorted order; for each: u32 length + key (UTF-8), u8 length + dtype name
    (e.g. ``float32``), u8 ndim + u64 per dimension, u64 byte count + the tensor's
    contiguous little-endian bytes. All integers little-endian.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        name = key.encode("utf-8")
        dtype = str(t.dtype).removeprefix("torch.").encode("ascii")
        h.update(struct.pack("<I", len(name)) + name)
        h.update(struct.pack("<B", len(dtype)) + dtype)
        h.update(struct.pack("<B", t.dim()) + b"".join(struct.pack("<Q", d) for d in t.shape))
        data = _le_bytes(t, torch)
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.digest()


def _le_bytes(t: torch.Tensor, torch: Any):
    """The tensor's little-endian bytes: a view of its memory where possible, no copy."""
    flat = t.reshape(-1)
    if sys.byteorder == "little" or flat.element_size() == 1:
        return flat.view(torch.uint8).numpy().data if flat.numel() else b""
    arr = flat.numpy()  # big-endian host: bfloat16 etc. are not supported there
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" if available else "cpu"; an unavailable CUDA -> ModelError."""
    if device == "cpu":
        return device  # without importing torch
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: {one_line(exc)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"device {device!r} is not supported; use cpu, cuda or auto")
    return str(dev)


_CACHED: dict = {}  # (name, weights, device) -> LoadedModel


def cached_model(name: str, *, weights: str | os.PathLike | None = None,
                 device: str = "cpu") -> LoadedModel:
    """:func:`load_model`, once per process for each (name, weights, device)."""
    key = (name, None if weights is None else os.fspath(weights), device)
    if key not in _CACHED:
        _CACHED[key] = load_model(name, weights=weights, device=device)
    return _CACHED[key]


def load_model(name: str, *, weights: str | os.PathLike | None = None,
               device: str = "cpu") -> LoadedModel:
    """Resolve, load, check and hash the weights of model ``name``; model in eval mode."""
    from tokpack.codecs import family_module

    spec = get_spec(name)
    family = family_module(spec.family)  # a missing extra fails before any work
    dev = resolve_device(device)
    return family.load(spec, resolve_weights(spec, weights), dev)
