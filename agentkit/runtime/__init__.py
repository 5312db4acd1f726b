"""The torch-free runtime: act with an exported policy using onnxruntime and numpy only.

    from agentkit import runtime
    policy = runtime.load("policy.onnx")
    policy.metadata["action"]             # what the file's actions mean
    action = policy.act(obs, mask=mask)   # one observation or a batch; deterministic by default
    action = policy.act(obs, deterministic=False, rng=np.random.default_rng(0))  # --stochastic exports

Importing this package never imports torch, so a game server or a tool can depend on it alone.
"""

from agentkit.runtime.policy import METADATA_KEY, SUPPORTED_CONTRACTS, Policy, PolicyFileError, load

__all__ = ["METADATA_KEY", "SUPPORTED_CONTRACTS", "Policy", "PolicyFileError", "load"]
