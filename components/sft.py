from kfp.dsl import Metrics, Model, Output


def sft(config_json: str, model: Output[Model], metrics: Output[Metrics]):
    """LoRA supervised fine-tuning of the message writer (trl SFTTrainer)."""
    from retention.config import Profile
    from retention.messaging.sft import train_sft

    result = train_sft(Profile.model_validate_json(config_json), model.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["framework"] = "peft-lora"
    model.metadata["stage"] = "sft"
