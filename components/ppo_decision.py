from kfp.dsl import Dataset, Input, Metrics, Model, Output


def ppo_decision(
    config_json: str,
    splits: Input[Dataset],
    risk: Input[Model],
    accept: Input[Model],
    ltv: Input[Model],
    uplift: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """PPO contact policy (Ray RLlib, Lagrangian limits) on an env built from the four models."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.decision.train import train_decision

    result = train_decision(
        Profile.model_validate_json(config_json),
        splits.path,
        risk.path,
        accept.path,
        ltv.path,
        uplift.path,
        model.path,
    )
    log_result(result, model, metrics)
