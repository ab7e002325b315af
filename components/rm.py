from kfp.dsl import Metrics, Model, Output


def rm(config_json: str, model: Output[Model], metrics: Output[Metrics]):
    """Bradley-Terry reward model for messages (trl RewardTrainer, LoRA)."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.messaging.reward import train_rm

    log_result(train_rm(Profile.model_validate_json(config_json), model.path), model, metrics)
    model.metadata["stage"] = "rm"
