from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def train_risk(
    config_json: str,
    splits: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
):
    """XGBoost P(churn), calibrated on valid; metrics and ROC logged for the KFP UI."""
    import json
    from pathlib import Path

    from retention.config import Profile
    from retention.models.outputs import CURVES_FILE
    from retention.models.risk import train_risk as run

    result = run(Profile.model_validate_json(config_json), splits.path, model.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["framework"] = "xgboost"
    model.metadata["test_auc"] = result["test_auc"]
    curves = json.loads((Path(model.path) / CURVES_FILE).read_text())
    roc.log_roc_curve(curves["roc"]["fpr"], curves["roc"]["tpr"], curves["roc"]["thresholds"])
    roc.log_confusion_matrix(["stays", "churns"], curves["confusion"])
