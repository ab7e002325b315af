from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_phase_health(
    config_json: str, splits: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
):
    """One LightGBM per journey phase with SHAP drivers and data-grounded summaries."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.models.phase_health import train_phase_health as run

    result = run(Profile.model_validate_json(config_json), splits.path, model.path)
    log_result(result, model, metrics)
    for phase in result.details["phase_order"]:
        v = result.details["phases"][phase]
        metrics.log_metric(f"{phase}_auc", v["test_auc"])
        print(v["summary"])
