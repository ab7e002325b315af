from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_uplift(
    config_json: str, splits: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
):
    """Treatment effect (two-model LightGBM) from the randomised campaign, Qini held out."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.models.uplift import train_uplift as run

    log_result(
        run(Profile.model_validate_json(config_json), splits.path, model.path), model, metrics
    )
