from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def train_binary(
    config_json: str,
    model_name: str,
    splits: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
):
    """A calibrated XGBoost classifier (risk, accept: ``model_name``); metrics and ROC for the UI."""
    from components.kfp_results import log_curves, log_result
    from retention.config import Profile
    from retention.models.binary_trainers import train_named

    result = train_named(
        model_name, Profile.model_validate_json(config_json), splits.path, model.path
    )
    log_result(result, model, metrics)
    log_curves(result, model, roc)
