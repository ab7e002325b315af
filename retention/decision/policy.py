"""The exported contact policy: TorchScript logits + JSON metadata, no Ray needed to load or run it.

The metadata records the contact contract the policy was trained under: its observations (offer
costs, the period's length, cooldown and fatigue) mean what that contract says, so serving refuses
a policy whose contract differs from its own in any of those (``check_contract``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retention.contract import ContactContract
from retention.decision.baselines import Policy
from retention.decision.env import ACTION_DIMS, OBS_NAMES
from retention.decision.heuristics import rule_logits
from retention.fileio import read_json

POLICY_FILE = "policy.pt"
META_FILE = "policy.json"
# The contract's fields a policy's observations depend on (quiet hours, the time zone and the
# absolute budget do not: the policy sees the budget as a share).
OBSERVED_CONTRACT = (
    "offers",
    "contact_cost",
    "limits.cooldown_days",
    "limits.fatigue_cap",
    "limits.period",
)


def _field(c: ContactContract, dotted: str) -> Any:
    value: Any = c
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_contract(meta: dict[str, Any], contract: ContactContract) -> None:
    """A ValueError naming each observed contract field where the policy's training contract
    (``meta["contract"]``) and ``contract`` differ, or when the policy records none."""
    if "contract" not in meta:
        raise ValueError(f"{META_FILE}: no contract recorded; retrain the policy")
    trained = ContactContract.model_validate(meta["contract"])
    differ = [f for f in OBSERVED_CONTRACT if _field(trained, f) != _field(contract, f)]
    if differ:
        raise ValueError(
            f"{META_FILE}: the policy was trained under another contract "
            f"(contract.{', contract.'.join(differ)} differ); retrain it under this profile's"
        )


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
        self.name = name
        # A released heuristic (the champion when PPO lost to it) carries its rule, not a net.
        self.rule: dict[str, Any] | None = self.meta.get("rule")
        if self.rule is None:
            self.net = torch.jit.load(str(path / POLICY_FILE), map_location="cpu").eval()
        self._torch = torch

    def logits(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, len(OBS_NAMES))
        if self.rule is not None:
            return rule_logits(self.rule, obs)
        with self._torch.inference_mode():
            return self.net(self._torch.from_numpy(obs)).numpy()

    def probabilities(self, obs: np.ndarray) -> list[np.ndarray]:
        return split_probabilities(self.logits(obs))

    def act(self, obs, env=None) -> np.ndarray:
        return argmax_action(self.logits(obs)[0])
