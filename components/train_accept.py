from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def train_accept(
    config_json: str,
    splits: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
):
    """XGBoost P(accept | customer, offer level), monotone in the offer level, calibrated."""
    import json
    from pathlib import Path

    from retention.config import Profile
    from retention.models.accept import train_accept as run
    from retention.models.outputs import CURVES_FILE

    result = run(Profile.model_validate_json(config_json), splits.path, model.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["framework"] = "xgboost"
    curves = json.loads((Path(model.path) / CURVES_FILE).read_text())
    roc.log_roc_curve(curves["roc"]["fpr"], curves["roc"]["tpr"], curves["roc"]["thresholds"])
    roc.log_confusion_matrix(["declines", "accepts"], curves["confusion"])
