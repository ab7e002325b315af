from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_ltv(
    config_json: str, splits: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
):
    """12-month value (hurdle Gamma GLM vs LightGBM Tweedie) and the transactional churn label."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.models.ltv import train_ltv as run

    log_result(
        run(Profile.model_validate_json(config_json), splits.path, model.path), model, metrics
    )
