"""Source channels <-> model channels and token streams (the container's channel_mode).

==  ===========  ==========================================================
id  mode         encode / decode
==  ===========  ==========================================================
0   AS_IS        source channels == model channels / as they are
1   DOWNMIX      mono model: mean of all channels / mono copied to every channel
2   UPMIX        stereo model, mono source: duplicated / mean of left and right
3   SPLIT        mono model: each channel its own stream / exact
4   FOLD_STEREO  stereo model, >2 channels: left = mean of even-indexed channels,
                 right = mean of odd-indexed / even channels get left, odd get right
==  ===========  ==========================================================
"""

from __future__ import annotations

import numpy as np

from tokpack.errors import ModelError
from tokpack.formats import ChannelMode
from tokpack.formats.spec import MAX_STREAMS

CHANNEL_CHOICES = ("auto", "split")


def plan_channels(model_channels: int, source_channels: int, request: str = "auto",
                  model_name: str = "") -> tuple[ChannelMode, int]:
    """(channel_mode, n_streams) for a source; ``request`` is "auto" or "split"."""
    if request not in CHANNEL_CHOICES:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_CHOICES)}, got {request!r}")
    if model_channels == 1:
        if source_channels == 1:
            return ChannelMode.AS_IS, 1
        if request == "split":
            if source_channels > MAX_STREAMS:
                raise ModelError(f"cannot split {source_channels} channels into streams; "
                                 f"a container holds at most {MAX_STREAMS}")
            return ChannelMode.SPLIT, source_channels
        return ChannelMode.DOWNMIX, 1
    if request == "split":
        raise ModelError(f"channels='split' needs a mono model; {model_name or 'this model'} "
                         f"has {model_channels} channels")
    if model_channels == 2:
        if source_channels == 1:
            return ChannelMode.UPMIX, 1
        if source_channels == 2:
            return ChannelMode.AS_IS, 1
        return ChannelMode.FOLD_STEREO, 1
    if source_channels == model_channels:
        return ChannelMode.AS_IS, 1
    raise ModelError(f"no channel rule for a {source_channels}-channel source and a "
                     f"{model_channels}-channel model")


def to_streams(audio: np.ndarray, mode: int, model_channels: int) -> np.ndarray:
    """[frames, source_channels] -> float32 [n_streams, model_channels, frames]."""
    x = np.asarray(audio, dtype=np.float32)
    mode = ChannelMode(mode)
    if mode == ChannelMode.AS_IS:
        out = x.T[np.newaxis]
    elif mode == ChannelMode.DOWNMIX:
        out = x.mean(axis=1, dtype=np.float64)[np.newaxis, np.newaxis]
    elif mode == ChannelMode.UPMIX:
        out = np.repeat(x.T[np.newaxis], model_channels, axis=1)
    elif mode == ChannelMode.SPLIT:
        out = x.T[:, np.newaxis, :]
    else:  # FOLD_STEREO
        left = x[:, 0::2].mean(axis=1, dtype=np.float64)
        right = x[:, 1::2].mean(axis=1, dtype=np.float64)
        out = np.stack([left, right])[np.newaxis]
    return np.ascontiguousarray(out, dtype=np.float32)


def from_streams(y: np.ndarray, mode: int, source_channels: int, *,
                 restore: bool = True) -> np.ndarray:
    """[n_streams, model_channels, frames] -> float32 [frames, channels].

    With ``restore`` the output has the source's channel count (see the module table);
    without, it has the model's channels (one per stream for SPLIT).
    """
    mode = ChannelMode(mode)
    if mode == ChannelMode.SPLIT:
        out = y[:, 0, :].T
    elif not restore or mode == ChannelMode.AS_IS:
        out = y[0].T
    elif mode == ChannelMode.DOWNMIX:
        out = np.repeat(y[0, 0][:, np.newaxis], source_channels, axis=1)
    elif mode == ChannelMode.UPMIX:
        out = y[0].mean(axis=0, dtype=np.float64)[:, np.newaxis]
    else:  # FOLD_STEREO
        out = y[0][np.arange(source_channels) % 2].T
    return np.ascontiguousarray(out, dtype=np.float32)
