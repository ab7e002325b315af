from kfp.dsl import HTML, Input, Metrics, Model, Output


def evaluate_gates(
    config_json: str,
    risk: Input[Model],
    accept: Input[Model],
    phase_health: Input[Model],
    ltv: Input[Model],
    decision: Input[Model],
    writer: Input[Model],
    rm: Input[Model],
    report: Output[HTML],
    summary: Output[Metrics],
) -> bool:
    """Judge every model against the profile's thresholds; an HTML report, returns ``passed``.

    A single return value on purpose: kfp.local (2.17) cannot resolve a ``dsl.If`` condition on
    one field of a NamedTuple output, only on a component's sole ``Output``.
    """
    from retention.config import Profile
    from retention.evaluation.evaluate import evaluate_run

    result = evaluate_run(
        Profile.model_validate_json(config_json),
        {
            "risk": risk.path,
            "accept": accept.path,
            "phase_health": phase_health.path,
            "ltv": ltv.path,
            "decision": decision.path,
            "writer": writer.path,
            "rm": rm.path,
        },
        report.path,
    )
    for gate in result["gates"]:
        if gate["value"] is not None:
            summary.log_metric(f"{gate['model']}.{gate['metric']}", float(gate["value"]))
    summary.log_metric("passed", 1.0 if result["passed"] else 0.0)
    for line in result["failures"]:
        print(f"GATE FAILED: {line}")
    return bool(result["passed"])
