"""The built-in encoder plugins: ``cnn`` (Nature-CNN sized), ``multi`` (Dicts mixing images and vectors),
``impala`` (residual) and ``mlp`` (the vector trunk), registered through ``agentkit_register_encoders``
like any third-party encoder. The contract is ``agentkit.encoders``.

Registration order decides ``policy.encoder: auto``: the CNN for image observations, the multi-input encoder
for Dicts or Tuples that hold an image entry, the MLP for everything else (impala is only chosen by name).

    policy: {encoder: {plugin: cnn, features_dim: 256}}
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from gymnasium import spaces
from pydantic import Field
from torch import Tensor, nn

import agentkit
from agentkit.config import EncoderConfig, PolicyConfig
from agentkit.encoders import (
    Encoder,
    EncoderSpec,
    channel_layout,
    chw_shape,
    image_fields,
    image_layout,
    to_chw,
)
from agentkit.errors import ConfigError
from agentkit.policy import ACTIVATIONS, ObsNormalizer, layer_init, mlp

# -- mlp ------------------------------------------------------------------------------------------------------


class MLPConfig(EncoderConfig):
    """The MLP trunk: ``policy.hidden_sizes`` layers of ``policy.activation`` on the flattened observation."""

    plugin: str = "mlp"

    @classmethod
    def supports(cls, spec: EncoderSpec) -> bool:
        return True


class MLPEncoder(Encoder):
    """flatten(obs) ⊕ extra → running normaliser → hidden layers (the trunk agentkit always had)."""

    def __init__(self, config: MLPConfig, spec: EncoderSpec, policy: PolicyConfig):
        super().__init__()
        self.obs_shape = tuple(int(d) for d in spec.space.shape)
        in_dim = int(math.prod(self.obs_shape)) + spec.extra_dim
        self.normalizer = ObsNormalizer((in_dim,), policy.obs_clip, policy.normalize_obs)
        self.net = mlp(in_dim, policy.hidden_sizes, policy.activation)
        self.out_dim = policy.hidden_sizes[-1] if policy.hidden_sizes else in_dim

    def _features(self, obs: Tensor, extra: Tensor | None) -> Tensor:
        # a float32 vector observation is taken as it is: flatten and to() would return it, one dispatch each
        x = obs if obs.dim() == 2 and obs.dtype == torch.float32 else obs.flatten(1).to(torch.float32)
        return x if extra is None else torch.cat([x, extra.to(torch.float32)], dim=-1)

    def forward(self, obs: Tensor, extra: Tensor | None = None) -> Tensor:
        x = self._features(obs, extra)
        return self.net(self.normalizer(x) if self.normalizer.enabled else x)  # disabled, it is the identity

    def update_stats(self, obs: Tensor, extra: Tensor | None = None) -> None:
        obs = obs.reshape(-1, *self.obs_shape)
        self.normalizer.update(self._features(obs, None if extra is None else extra.reshape(-1, extra.shape[-1])))


# -- image helpers ---------------------------------------------------------------------------------------------


def _conv_stack(in_channels: int, hw: tuple[int, int], channels: list[int], kernels: list[int],
                strides: list[int], padding: int, where: str) -> tuple[nn.Sequential, int]:
    """Conv + ReLU layers and the width of their flattened output, or a ConfigError naming the layer that
    leaves nothing of the image."""
    layers: list[nn.Module] = []
    h, w = hw
    c = in_channels
    for i, (out, k, s) in enumerate(zip(channels, kernels, strides, strict=True)):
        h, w = (h + 2 * padding - k) // s + 1, (w + 2 * padding - k) // s + 1
        if h < 1 or w < 1:
            raise ConfigError(
                f"{where}: conv layer {i} (kernel {k}, stride {s}) leaves nothing of a {hw[0]}x{hw[1]} image; "
                "give smaller kernels/strides (policy.encoder.kernels, policy.encoder.strides) or a larger image."
            )
        layers += [layer_init(nn.Conv2d(c, out, k, s, padding)), nn.ReLU()]
        c = out
    return nn.Sequential(*layers), c * h * w


class _ImageInput(nn.Module):
    """Pixels in the env's layout and dtype → float ``[B, C, H, W]``, scaled (1/255 for uint8 images)."""

    def __init__(self, space: Any, layout: str, scale: float | None):
        super().__init__()
        self.layout = layout
        self.scale = float(scale) if scale is not None else (1.0 / 255.0 if space.dtype.kind == "u" else 1.0)
        self.shape = tuple(int(d) for d in space.shape)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs.to(torch.float32)
        if x.ndim == 2:  # an image entry sliced out of a flattened Dict observation
            x = x.reshape(-1, *self.shape)  # (unflatten traces the example's batch size into the export)
        if self.scale != 1.0:
            x = x * self.scale
        return to_chw(x, self.layout)


#: ``policy.encoder.layout``: which axis of a 3-dim observation holds the channels.
Layout = Literal["auto", "HWC", "CHW"]


def _layout_field():
    return Field("auto", description=(
        "Channel axis of the observation: auto (uint8 images, or 1/3/4 channels at one end), HWC (channels "
        "last: a board of planes such as connect four's 6x7x2) or CHW (channels first)."))


def _planes(spec: EncoderSpec) -> Any:
    """The space a conv encoder reads: the observation itself, or, for a Dict whose one entry beside its action
    mask is a Box of 3 dims (PettingZoo's board games: connect four's 6x7x2 planes), that entry in its own
    shape (``_ImageInput`` reshapes the flat vector back)."""
    fields = spec.fields or []
    if len(fields) == 1 and fields[0]["encoding"] == "box" and len(fields[0]["shape"]) == 3:
        shape = tuple(fields[0]["shape"])
        span = slice(fields[0]["start"], fields[0]["start"] + fields[0]["size"])
        return spaces.Box(spec.space.low[span].reshape(shape), spec.space.high[span].reshape(shape),
                          dtype=spec.space.dtype)
    return spec.space


def _layout_or_error(space: Any, where: str, layout: Layout = "auto") -> str:
    """The layout of ``space`` (``layout`` when named), or a ConfigError saying how to name it."""
    if layout != "auto" and len(space.shape) == 3:
        return layout
    found = image_layout(space)
    if found is None:  # float frames, channels at one end
        found = channel_layout(tuple(space.shape))
    if found is None:
        raise ConfigError(
            f"{where}: this encoder takes images (a Box of 3 dims, HWC or CHW, or 4 for stacked frames; a board "
            f"of planes with policy.encoder.layout: HWC or CHW); the observation is {space}. Name its channel "
            "axis with policy.encoder.layout, or use policy.encoder: mlp (or auto) for it."
        )
    return found


# -- cnn --------------------------------------------------------------------------------------------------------


class CNNConfig(EncoderConfig):
    """Nature-CNN (Mnih et al. 2015) sized: 32-64-64 channels, kernels 8-4-3, strides 4-2-1, 512 features.

    Images smaller than 36 px a side (where Nature's kernels leave nothing) get kernels 3-3-3, strides 2-1-1
    unless kernels/strides are given.
    """

    plugin: str = "cnn"
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], description="Output channels per conv layer.")
    kernels: list[int] | None = Field(None, description="Kernel size per layer (default 8-4-3, or 3-3-3 below 36 px).")
    strides: list[int] | None = Field(None, description="Stride per layer (default 4-2-1, or 2-1-1 below 36 px).")
    padding: int = Field(0, ge=0, description="Zeros added on each side by every conv layer (1 with kernels of 3 "
                                               "keeps a small board's size).")
    layout: Layout = _layout_field()
    features_dim: int = Field(512, ge=1, description="Width of the linear layer after the convolutions.")
    scale: float | None = Field(None, gt=0, description="Pixel scale (default 1/255 for uint8 images, else 1).")

    @classmethod
    def supports(cls, spec: EncoderSpec) -> bool:
        return spec.fields is None and image_layout(spec.space) is not None


def _cnn_layers(config: CNNConfig, chw: tuple[int, int, int], where: str) -> tuple[nn.Sequential, int]:
    small = min(chw[1], chw[2]) < 36
    kernels = config.kernels or ([3, 3, 3] if small else [8, 4, 3])
    strides = config.strides or ([2, 1, 1] if small else [4, 2, 1])
    n = len(config.channels)
    if len(kernels) != n or len(strides) != n:
        raise ConfigError(
            f"{where}: channels, kernels and strides need one entry per conv layer (got {n}, {len(kernels)}, "
            f"{len(strides)})."
        )
    return _conv_stack(chw[0], chw[1:], config.channels, kernels, strides, config.padding, where)


class CNNEncoder(Encoder):
    """scale + HWC→CHW → convolutions → flatten ⊕ extra → Linear(features_dim) → ReLU."""

    def __init__(self, config: CNNConfig, spec: EncoderSpec, policy: PolicyConfig):
        super().__init__()
        space = _planes(spec)
        layout = _layout_or_error(space, "policy.encoder: cnn", config.layout)
        chw = chw_shape(tuple(space.shape), layout)
        self.input = _ImageInput(space, layout, config.scale)
        self.convs, flat = _cnn_layers(config, chw, "policy.encoder: cnn")
        self.fc = nn.Sequential(layer_init(nn.Linear(flat + spec.extra_dim, config.features_dim)), nn.ReLU())
        self.normalizer = ObsNormalizer((1,), enabled=False)  # pixels are scaled, not normalised
        self.out_dim = config.features_dim

    def forward(self, obs: Tensor, extra: Tensor | None = None) -> Tensor:
        h = self.convs(self.input(obs)).flatten(1)
        if extra is not None:
            h = torch.cat([h, extra.to(h.dtype)], dim=-1)
        return self.fc(h)

    def update_stats(self, obs: Tensor, extra: Tensor | None = None) -> None:
        return None


# -- impala ------------------------------------------------------------------------------------------------------


class ImpalaConfig(EncoderConfig):
    """IMPALA's residual CNN (Espeholt et al. 2018): per stage a 3×3 conv, a 3×3 max-pool of stride 2 and two
    residual blocks; then Linear(features_dim) + ReLU."""

    plugin: str = "impala"
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32], description="Channels of each stage.")
    features_dim: int = Field(256, ge=1, description="Width of the linear layer after the stages.")
    layout: Layout = _layout_field()
    scale: float | None = Field(None, gt=0, description="Pixel scale (default 1/255 for uint8 images, else 1).")


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaEncoder(Encoder):
    def __init__(self, config: ImpalaConfig, spec: EncoderSpec, policy: PolicyConfig):
        super().__init__()
        space = _planes(spec)
        layout = _layout_or_error(space, "policy.encoder: impala", config.layout)
        c, h, w = chw_shape(tuple(space.shape), layout)
        self.input = _ImageInput(space, layout, config.scale)
        stages: list[nn.Module] = []
        for out in config.channels:
            stages += [nn.Conv2d(c, out, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1), _Residual(out),
                       _Residual(out)]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
        self.stages = nn.Sequential(*stages, nn.ReLU())
        self.fc = nn.Sequential(layer_init(nn.Linear(c * h * w + spec.extra_dim, config.features_dim)), nn.ReLU())
        self.normalizer = ObsNormalizer((1,), enabled=False)
        self.out_dim = config.features_dim

    def forward(self, obs: Tensor, extra: Tensor | None = None) -> Tensor:
        h = self.stages(self.input(obs)).flatten(1)
        if extra is not None:
            h = torch.cat([h, extra.to(h.dtype)], dim=-1)
        return self.fc(h)

    def update_stats(self, obs: Tensor, extra: Tensor | None = None) -> None:
        return None


# -- multi-input -------------------------------------------------------------------------------------------------


class MultiConfig(EncoderConfig):
    """A Dict (or Tuple) observation mixing images and vectors: each image entry through its own CNN (the
    ``cnn`` options below), the other entries normalised; everything concatenated, then the MLP trunk
    (``policy.hidden_sizes``)."""

    plugin: str = "multi"
    cnn: CNNConfig = Field(default_factory=lambda: CNNConfig(plugin="cnn", features_dim=256),
                           description="Options of the CNN applied to each image entry.")

    @classmethod
    def supports(cls, spec: EncoderSpec) -> bool:
        return bool(image_fields(spec))


class MultiInputEncoder(Encoder):
    """The flat Dict vector, split by ``fields``: image entries reshaped to their own shape → CNN; the rest
    (and ``extra``) → running normaliser; concatenated → hidden layers."""

    def __init__(self, config: MultiConfig, spec: EncoderSpec, policy: PolicyConfig):
        super().__init__()
        images = image_fields(spec)
        if not images:
            raise ConfigError(
                "policy.encoder: multi takes a Dict or Tuple observation with at least one image entry (a Box of "
                f"3 dims bounded 0..255); this observation has none ({spec.space}). Use policy.encoder: mlp."
            )
        from gymnasium import spaces

        self.image_spans = [(int(f["start"]), int(f["size"])) for f in images]
        self.cnns = nn.ModuleList()
        for f in images:
            sub = spaces.Box(0, 255, tuple(f["shape"]), dtype="uint8")
            self.cnns.append(CNNEncoder(config.cnn, EncoderSpec(sub), policy))
        in_image = {i for start, size in self.image_spans for i in range(start, start + size)}
        vector = [i for i in range(int(spec.space.shape[0])) if i not in in_image]
        self.register_buffer("vector_index", torch.tensor(vector, dtype=torch.int64))
        vec_dim = len(vector) + spec.extra_dim
        self.normalizer = ObsNormalizer((vec_dim,), policy.obs_clip, policy.normalize_obs and vec_dim > 0)
        in_dim = sum(c.out_dim for c in self.cnns) + vec_dim
        self.net = mlp(in_dim, policy.hidden_sizes, policy.activation)
        self.out_dim = policy.hidden_sizes[-1] if policy.hidden_sizes else in_dim

    def _vector(self, obs: Tensor, extra: Tensor | None) -> Tensor:
        x = obs.index_select(-1, self.vector_index).to(torch.float32)
        return x if extra is None else torch.cat([x, extra.to(torch.float32)], dim=-1)

    def forward(self, obs: Tensor, extra: Tensor | None = None) -> Tensor:
        parts = [cnn(obs[:, start:start + size]) for cnn, (start, size) in zip(self.cnns, self.image_spans,
                                                                                  strict=True)]
        parts.append(self.normalizer(self._vector(obs, extra)))
        return self.net(torch.cat(parts, dim=-1))

    def update_stats(self, obs: Tensor, extra: Tensor | None = None) -> None:
        obs = obs.reshape(-1, obs.shape[-1])
        self.normalizer.update(self._vector(obs, None if extra is None else extra.reshape(-1, extra.shape[-1])))


# -- registration ------------------------------------------------------------------------------------------------


@agentkit.hookimpl
def agentkit_register_encoders(register):
    register("cnn", CNNEncoder, CNNConfig, "Nature-CNN sized conv encoder for image observations (uint8, HWC or CHW).")
    register("multi", MultiInputEncoder, MultiConfig,
             "Dict/Tuple observations mixing images and vectors: a CNN per image entry, then the MLP trunk.")
    register("impala", ImpalaEncoder, ImpalaConfig, "IMPALA's residual CNN for image observations.")
    register("mlp", MLPEncoder, MLPConfig, "MLP trunk (policy.hidden_sizes) on the flattened observation.")


__all__ = ["ACTIVATIONS", "CNNEncoder", "ImpalaEncoder", "MLPEncoder", "MultiInputEncoder"]
