from kfp.dsl import Input, Model


def push(
    config_json: str,
    risk: Input[Model],
    accept: Input[Model],
    phase_health: Input[Model],
    ltv: Input[Model],
    decision: Input[Model],
    writer: Input[Model],
) -> str:
    """Copy the gated models to the model store under a new version; flip ``production``."""
    import json

    from retention.config import Profile
    from retention.store.push import push_models

    pointer = push_models(
        Profile.model_validate_json(config_json),
        {
            "risk": risk.path,
            "accept": accept.path,
            "phase_health": phase_health.path,
            "ltv": ltv.path,
            "decision": decision.path,
            "writer": writer.path,
        },
    )
    print(f"pushed release {pointer['release']}: {json.dumps(pointer['models'])}")
    return json.dumps(pointer)
