"""Encoder plugins: registered through their own hook like any plugin, chosen by ``policy.encoder`` (``auto``
from the observation space), each taking the observation in its own shape and dtype."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agentkit.config import EncoderConfig, PolicyConfig
from agentkit.encoders import EncoderSpec, build_encoder, image_layout
from agentkit.errors import ConfigError, PluginError
from agentkit.host import PluginHost, load_run_config
from agentkit.observations import ObservationLayout

HWC = spaces.Box(0, 255, (16, 16, 3), np.uint8)


@pytest.fixture(scope="module")
def host():
    return PluginHost(autoload=False)


def _cnn_policy(host, name: str = "cnn", **options) -> PolicyConfig:
    """A policy config naming the encoder ``name`` with ``options`` (validated by its registered model)."""
    cfg = PolicyConfig()
    cfg.encoder = host.registry.get("encoder", name).validate_config({"plugin": name, **options})
    return cfg


@pytest.mark.parametrize(("shape", "layout"), [
    ((96, 96, 3), "HWC"), ((3, 64, 64), "CHW"), ((84, 84, 1), "HWC"), ((4, 84, 84, 3), "SHWC"), ((4, 3, 84, 84), "SCHW"),
    ((4, 84, 84), "CHW"),  # four stacked grey frames: the stack is the channel axis
])
def test_image_layouts(shape, layout):
    assert image_layout(spaces.Box(0, 255, shape, np.uint8)) == layout


def test_not_images():
    assert image_layout(spaces.Box(0, 1, (16, 16, 3), np.float32)) is None  # floats are not pixels
    assert image_layout(spaces.Box(0, 255, (27, 5), np.uint8)) is None
    assert image_layout(spaces.Box(0, 255, (16, 16, 7), np.uint8)) is None


def test_auto_picks_by_observation(host):
    reg = host.registry
    assert reg.auto_encoder(EncoderSpec(HWC)).name == "cnn"
    assert reg.auto_encoder(EncoderSpec(spaces.Box(-1, 1, (8,), np.float32))).name == "mlp"
    mixed = ObservationLayout(spaces.Dict({"image": HWC, "speed": spaces.Box(-1, 1, (2,), np.float32)}), "env")
    assert reg.auto_encoder(EncoderSpec(mixed.space, mixed.fields)).name == "multi"
    vector_dict = ObservationLayout(spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(-1, 1, (2,))}), "env")
    assert reg.auto_encoder(EncoderSpec(vector_dict.space, vector_dict.fields)).name == "mlp"


@pytest.mark.parametrize("name", ["cnn", "impala", "mlp"])
@pytest.mark.parametrize("shape", [(16, 16, 3), (3, 16, 16), (2, 40, 40, 3)])
def test_every_image_encoder_takes_uint8_frames_in_their_own_layout(host, name, shape):
    space = spaces.Box(0, 255, shape, np.uint8)
    encoder = build_encoder(_cnn_policy(host, name), host.registry, EncoderSpec(space, extra_dim=2))
    obs = torch.from_numpy(np.stack([space.sample() for _ in range(5)]))
    out = encoder(obs, torch.eye(2)[[0, 1, 0, 1, 0]])
    assert out.shape == (5, encoder.out_dim) and torch.isfinite(out).all()
    encoder.update_stats(obs.unsqueeze(0), torch.eye(2)[[0, 1, 0, 1, 0]].unsqueeze(0))  # [T, N, ...] batches


def test_cnn_reads_channels_last_as_channels_first(host):
    """The same pixels in HWC and CHW give the same features when the weights are the same: the layout is
    undone inside the encoder."""
    cfg = _cnn_policy(host)
    torch.manual_seed(0)
    hwc = build_encoder(cfg, host.registry, EncoderSpec(HWC))
    chw = build_encoder(cfg, host.registry, EncoderSpec(spaces.Box(0, 255, (3, 16, 16), np.uint8)))
    chw.load_state_dict(hwc.state_dict())
    frames = torch.from_numpy(np.stack([HWC.sample() for _ in range(4)]))
    torch.testing.assert_close(hwc(frames), chw(frames.permute(0, 3, 1, 2)))


def test_multi_input_encoder_reads_a_dict_of_image_and_vector(host):
    raw_space = spaces.Dict({"image": HWC, "speed": spaces.Box(-1, 1, (2,), np.float32), "gear": spaces.Discrete(3)})
    layout = ObservationLayout(raw_space, "env")
    encoder = build_encoder(PolicyConfig(), host.registry, EncoderSpec(layout.space, layout.fields))
    assert type(encoder).__name__ == "MultiInputEncoder" and len(encoder.cnns) == 1
    obs, _ = layout.split({k: np.stack([raw_space.sample()[k] for _ in range(3)]) for k in raw_space.spaces})
    x = torch.from_numpy(obs)
    assert encoder(x).shape == (3, encoder.out_dim)
    encoder.update_stats(x)
    assert encoder.normalizer.mean.shape == (5,)  # speed (2) + gear one-hot (3): the pixels are not normalised


def test_a_small_image_for_nature_kernels_is_named(host):
    with pytest.raises(ConfigError, match=r"conv layer 0 \(kernel 20, stride 1\) leaves nothing of a 16x16 image"):
        build_encoder(_cnn_policy(host, kernels=[20, 3, 3], strides=[1, 1, 1]), host.registry, EncoderSpec(HWC))


def test_a_board_of_planes_goes_through_the_cnn_with_a_named_layout(host):
    """Connect four's {observation: 6x7x2 planes, action_mask}: auto keeps the MLP, the cnn asks for the channel
    axis, and with ``layout: HWC`` it convolves the board itself (the same features as a CHW Box of it)."""
    raw = spaces.Dict({"observation": spaces.Box(0, 1, (6, 7, 2), np.int8),
                       "action_mask": spaces.Box(0, 1, (7,), np.int8)})
    board = ObservationLayout(raw, "env")
    spec = EncoderSpec(board.space, board.fields)
    assert host.registry.auto_encoder(spec).name == "mlp"
    with pytest.raises(ConfigError, match=r"policy\.encoder\.layout"):
        build_encoder(_cnn_policy(host, kernels=[3, 3], strides=[1, 1], channels=[8, 8]), host.registry, spec)
    options = {"kernels": [3, 3], "strides": [1, 1], "channels": [8, 8], "padding": 1}
    torch.manual_seed(0)
    planes = build_encoder(_cnn_policy(host, layout="HWC", **options), host.registry, spec)
    chw = build_encoder(_cnn_policy(host, layout="CHW", **options), host.registry,
                        EncoderSpec(spaces.Box(0, 1, (2, 6, 7), np.float32)))
    chw.load_state_dict(planes.state_dict())
    obs, _ = board.split({k: np.stack([raw.sample()[k] for _ in range(4)]) for k in raw.spaces})
    x = torch.from_numpy(obs)
    assert x.shape == (4, 84)
    torch.testing.assert_close(planes(x), chw(x.reshape(4, 6, 7, 2).permute(0, 3, 1, 2)))
    assert planes.convs[0].padding == (1, 1) and planes.fc[0].in_features == 8 * 6 * 7  # padding keeps 6x7


def test_config_names_the_encoder_and_set_works():
    base = {"env": {"plugin": "gymnasium", "id": "CartPole-v1"}, "algorithm": {"plugin": "ppo", "total_steps": 64}}
    config, _ = load_run_config(base, ["policy.encoder=impala"], autoload=False)
    assert config.policy.encoder.plugin == "impala"
    config, _ = load_run_config(base, ["policy.encoder.plugin=cnn", "policy.encoder.features_dim=128"], autoload=False)
    assert config.policy.encoder.features_dim == 128
    assert load_run_config(base, autoload=False)[0].policy.encoder == "auto"
    with pytest.raises(ConfigError, match=r"policy.encoder.plugin: unknown encoder plugin 'cnnn'.*Did you mean 'cnn'"):
        load_run_config(base, ["policy.encoder=cnnn"], autoload=False)
    with pytest.raises(ConfigError, match=r"policy.encoder.feature_dim: unknown key"):
        load_run_config(base, ["policy.encoder={plugin: cnn, feature_dim: 3}"], autoload=False)


def test_a_third_party_encoder_registers_through_the_hook_and_trains(tmp_path, monkeypatch):
    from agentkit.encoders import Encoder
    from agentkit.policy import ObsNormalizer
    from agentkit.trainer import train

    class MeanConfig(EncoderConfig):
        plugin: str = "mean_pixels"

    class MeanPixels(Encoder):
        """The mean colour of the frame: a deliberately tiny encoder."""

        def __init__(self, config, spec, policy):
            super().__init__()
            self.normalizer = ObsNormalizer((1,), enabled=False)
            self.out = torch.nn.Linear(spec.space.shape[-1] + spec.extra_dim, 8)
            self.out_dim = 8

        def forward(self, obs, extra=None):
            h = obs.float().mean(dim=(1, 2)) / 255.0
            return torch.tanh(self.out(h if extra is None else torch.cat([h, extra], -1)))

        def update_stats(self, obs, extra=None):
            return None

    module = types.ModuleType("mean_pixels_plugin")

    def agentkit_register_encoders(register):
        register("mean_pixels", MeanPixels, MeanConfig, "The frame's mean colour.")

    module.agentkit_register_encoders = agentkit_register_encoders
    monkeypatch.setitem(sys.modules, "mean_pixels_plugin", module)
    data = {"env": {"plugin": "gymnasium", "id": "image_test_envs:BrightSide-v0"},
            "algorithm": {"plugin": "ppo", "total_steps": 64, "num_steps": 32, "minibatch_size": 32, "update_epochs": 1},
            "policy": {"encoder": "mean_pixels"}, "plugins": ["mean_pixels_plugin"],
            "run": {"tensorboard": False, "progress": "none"}}
    config, host = load_run_config(data, autoload=False)
    assert host.registry.get("encoder", "mean_pixels").provider == "module mean_pixels_plugin"
    result = train(config, host, run_dir=tmp_path / "run")
    assert result["step"] == 64


def test_bad_and_duplicate_encoder_registrations_are_rejected(monkeypatch):
    module = types.ModuleType("bad_encoder_plugin")

    def agentkit_register_encoders(register):
        register("cnn", object, EncoderConfig, "A second cnn.")

    module.agentkit_register_encoders = agentkit_register_encoders
    monkeypatch.setitem(sys.modules, "bad_encoder_plugin", module)
    with pytest.raises(PluginError, match="two plugins register the encoder 'cnn': built-in and module bad_encoder_plugin"):
        PluginHost(["bad_encoder_plugin"], autoload=False)

    def wrong_model(register):
        register("other", object, PolicyConfig, "Wrong model base.")

    module.agentkit_register_encoders = wrong_model
    monkeypatch.setitem(sys.modules, "bad_encoder_plugin2", module)
    with pytest.raises(PluginError, match="must be a subclass of agentkit.config.EncoderConfig"):
        PluginHost(["bad_encoder_plugin2"], autoload=False)
