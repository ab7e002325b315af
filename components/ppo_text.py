from kfp.dsl import Input, Metrics, Model, Output


def ppo_text(
    config_json: str,
    sft: Input[Model],
    rm: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """PPO with an adaptive KL penalty on the SFT writer, rewarded by the RM and the shield."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.messaging.ppo_text import train_ppo_text

    result = train_ppo_text(Profile.model_validate_json(config_json), sft.path, rm.path, model.path)
    log_result(result, model, metrics)
    model.metadata["stage"] = "ppo"
