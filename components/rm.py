from kfp.dsl import Metrics, Model, Output


def rm(config_json: str, model: Output[Model], metrics: Output[Metrics]):
    """Bradley-Terry reward model for messages (trl RewardTrainer, LoRA)."""
    from retention.config import Profile
    from retention.messaging.reward import train_rm

    result = train_rm(Profile.model_validate_json(config_json), model.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["framework"] = "peft-lora"
    model.metadata["stage"] = "rm"
