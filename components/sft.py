from kfp.dsl import Metrics, Model, Output


def sft(config_json: str, model: Output[Model], metrics: Output[Metrics]):
    """LoRA supervised fine-tuning of the message writer (trl SFTTrainer)."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.messaging.sft import train_sft

    log_result(train_sft(Profile.model_validate_json(config_json), model.path), model, metrics)
    model.metadata["stage"] = "sft"
