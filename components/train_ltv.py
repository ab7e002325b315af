from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_ltv(
    config_json: str, splits: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
):
    """12-month value (hurdle Gamma GLM vs LightGBM Tweedie) and the transactional churn label."""
    from retention.config import Profile
    from retention.models.ltv import train_ltv as run

    result = run(Profile.model_validate_json(config_json), splits.path, model.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["framework"] = result["chosen"]
