"""RLlib callback reporting each finished episode's constraint usage (imported only with Ray)."""

from __future__ import annotations

from ray.rllib.callbacks.callbacks import RLlibCallback

from retention.decision.env import USAGE_KEYS

LOGGED = (*USAGE_KEYS.values(), "net_revenue", "budget_used", "contact_rate", "blocked_contacts")


class ConstraintMetrics(RLlibCallback):
    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        infos = episode.get_infos()
        stats = infos[-1].get("episode_stats") if infos else None
        if not stats or metrics_logger is None:
            return
        for key in LOGGED:
            # "mean" with no window covers the episodes since the last reduce (Ray 2.60): this
            # iteration's, which is what the dual update needs; no episode gives NaN.
            metrics_logger.log_value(("constraints", key), float(stats[key]), reduce="mean")
