"""The encoder contract: the part of a policy from the raw observation to the latent its head reads.

Encoders are plugins (``agentkit_register_encoders``); the built-ins (``mlp``, ``cnn``, ``impala``, ``multi``)
live in ``plugins/encoders.py`` and register through the same hook as any third-party encoder.
``policy.encoder: auto`` asks each registered encoder's config model ``supports(spec)`` in registration
order: the CNN takes image observations, the multi-input encoder Dicts holding images, the MLP the rest.

An encoder receives the observation exactly as the env adapter hands it (``EncoderSpec.space``: a Box in the
env's own shape, uint8 for images, float32 otherwise; a Dict or Tuple flattened to float32 by its ``fields``)
and does its own scaling (``/255``) and channel reordering (HWC → CHW), so that these are traced into an
export and the engine sends the env's observation as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from torch import Tensor, nn

#: Channel counts an image axis may have (grey, RGB, RGBA).
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is built for.

    Attributes:
        space: one observation as the policy takes it (a Box; its shape and dtype are the ONNX ``obs`` input's).
        fields: None for a Box observation; for a Dict or Tuple, how it was flattened into ``space``
            (``agentkit.observations``: each entry's key, shape, start and size).
        extra_dim: features appended to every observation after encoding (a one-hot agent id), 0 for none.
    """

    space: spaces.Box
    fields: list[dict[str, Any]] | None = None
    extra_dim: int = 0


class Encoder(nn.Module):
    """Base of every encoder: ``forward(obs [B, *space.shape], extra [B, extra_dim] | None) -> [B, out_dim]``.

    ``normalizer`` is the encoder's running observation normaliser (``agentkit.policy.ObsNormalizer``,
    disabled when it normalises nothing, e.g. a CNN that scales pixels by 1/255); ``update_stats`` feeds it
    collected observations and is called by the algorithms after each update.
    """

    out_dim: int
    normalizer: nn.Module

    def update_stats(self, obs: Tensor, extra: Tensor | None = None) -> None:  # pragma: no cover - interface
        """Update the running normaliser with a batch of raw observations (no-op by default)."""


def channel_layout(shape: tuple[int, ...]) -> str | None:
    """``HWC`` or ``CHW`` for a shape of 3 dims whose last or first axis could be channels (1, 3 or 4 of
    them; the last wins when both could, a 3×3×3 cube), else None. The dtype is the caller's concern."""
    if len(shape) != 3:
        return None
    if shape[-1] in _CHANNELS:
        return "HWC"
    if shape[0] in _CHANNELS:
        return "CHW"
    return None


def image_layout(space: Any) -> str | None:
    """The pixel layout of an image observation space, or None when it is not one.

    An image is a uint8 Box of 3 dims, ``HWC`` (channels last, 1/3/4 of them) or ``CHW`` (channels first),
    or 4 dims for a stack of frames (``SHWC`` / ``SCHW``, what gymnasium's FrameStackObservation makes).
    Channels last wins when both ends could be channels (a 3×3×3 cube).
    """
    if not isinstance(space, spaces.Box) or space.dtype != np.uint8:
        return None
    shape = tuple(space.shape)
    if len(shape) == 3:
        return channel_layout(shape)
    if len(shape) == 4:
        if shape[-1] in _CHANNELS:
            return "SHWC"
        if shape[1] in _CHANNELS:
            return "SCHW"
    return None


def chw_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """(channels, height, width) the CNN sees for an observation of ``shape`` in ``layout`` (stacked frames
    become channels)."""
    if layout == "HWC":
        h, w, c = shape
        return c, h, w
    if layout == "CHW":
        return tuple(shape)  # type: ignore[return-value]
    if layout == "SHWC":
        s, h, w, c = shape
        return s * c, h, w
    if layout == "SCHW":
        s, c, h, w = shape
        return s * c, h, w
    raise ValueError(f"unknown image layout {layout!r}")


def to_chw(x: Tensor, layout: str) -> Tensor:
    """A batch ``[B, *shape]`` in ``layout`` → ``[B, C, H, W]`` (traced into exports as Transpose/Reshape)."""
    if layout == "HWC":
        return x.permute(0, 3, 1, 2)
    if layout == "CHW":
        return x
    if layout == "SHWC":
        b, s, h, w, c = x.shape
        return x.permute(0, 1, 4, 2, 3).reshape(b, s * c, h, w)
    if layout == "SCHW":
        b, s, c, h, w = x.shape
        return x.reshape(b, s * c, h, w)
    raise ValueError(f"unknown image layout {layout!r}")


def image_fields(spec: EncoderSpec) -> list[dict[str, Any]]:
    """The entries of a flattened Dict/Tuple observation that are images: 3-dim Box entries (HWC or CHW)
    bounded to 0..255 (a uint8 image entry; the flat vector holds it as float32)."""
    if not spec.fields:
        return []
    found = []
    low, high = np.asarray(spec.space.low), np.asarray(spec.space.high)
    for field in spec.fields:
        shape = tuple(field["shape"])
        if field["encoding"] != "box" or len(shape) != 3:
            continue
        span = slice(field["start"], field["start"] + field["size"])
        if not (np.all(low[span] == 0) and np.all(high[span] == 255)):
            continue
        if channel_layout(shape) is not None:
            found.append(field)
    return found


def image_bytes(space: spaces.Box) -> int:
    """Bytes one observation takes in storage (its dtype's size times its elements)."""
    return int(math.prod(space.shape)) * np.dtype(space.dtype).itemsize


def resolve_encoder(policy_config: Any, registry: Any, spec: EncoderSpec):
    """The encoder registration and config for ``policy.encoder`` (``auto`` asks the registry)."""
    if policy_config.encoder == "auto":
        reg = registry.auto_encoder(spec)
        return reg, reg.default_config()
    return registry.get("encoder", policy_config.encoder.plugin, where="policy.encoder.plugin"), policy_config.encoder


def build_encoder(policy_config: Any, registry: Any, spec: EncoderSpec) -> Encoder:
    """The encoder ``policy.encoder`` names (or ``auto`` picks) for ``spec``."""
    reg, config = resolve_encoder(policy_config, registry, spec)
    return reg.factory(config, spec, policy_config)
