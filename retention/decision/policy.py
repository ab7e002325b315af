"""The exported contact policy: TorchScript logits + JSON metadata, no Ray needed to load or run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retention.decision.baselines import Policy
from retention.decision.env import ACTION_DIMS, OBS_NAMES
from retention.fileio import read_json

POLICY_FILE = "policy.pt"
META_FILE = "policy.json"


def split_probabilities(logits: np.ndarray) -> list[np.ndarray]:
    """Softmax over each action component's slice of the flat logits: [(n,2), (n,4), (n,8)]."""
    out, start = [], 0
    for size in ACTION_DIMS:
        z = logits[:, start : start + size]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out.append(z / z.sum(axis=1, keepdims=True))
        start += size
    return out


def argmax_action(logits: np.ndarray) -> np.ndarray:
    """The most probable value of each action component, from one row of flat logits."""
    out, start = [], 0
    for size in ACTION_DIMS:
        out.append(int(np.argmax(logits[start : start + size])))
        start += size
    return np.asarray(out)


class ExportedPolicy(Policy):
    """Deterministic actions (argmax of each component) from the exported network."""

    def __init__(self, path: str | Path, name: str = "ppo"):
        import torch

        path = Path(path)
        self.meta: dict[str, Any] = read_json(path / META_FILE)
        if list(self.meta["obs_names"]) != list(OBS_NAMES):
            raise ValueError(
                f"{path / META_FILE}: observation layout {self.meta['obs_names']} is not this "
                f"version's {list(OBS_NAMES)}"
            )
        self.net = torch.jit.load(str(path / POLICY_FILE), map_location="cpu").eval()
        self._torch = torch
        self.name = name

    def logits(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, len(OBS_NAMES))
        with self._torch.inference_mode():
            return self.net(self._torch.from_numpy(obs)).numpy()

    def probabilities(self, obs: np.ndarray) -> list[np.ndarray]:
        return split_probabilities(self.logits(obs))

    def act(self, obs, env=None) -> np.ndarray:
        return argmax_action(self.logits(obs)[0])
