from kfp.dsl import Input, Metrics, Model, Output


def narratives(
    config_json: str,
    phase_health: Input[Model],
    segments: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Per-phase and per-segment narratives phrased by the base LM, fact-checked, templated else."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.insights.narratives import train_narratives

    result = train_narratives(
        Profile.model_validate_json(config_json), phase_health.path, segments.path, model.path
    )
    log_result(result, model, metrics)
