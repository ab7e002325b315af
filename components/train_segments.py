from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_segments(
    config_json: str,
    splits: Input[Dataset],
    ltv: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """RFM segments of the order log (k-means, k by silhouette) with CLV, revenue and churn."""
    from components.kfp_results import log_result
    from retention.config import Profile
    from retention.insights.segments import train_segments as run

    result = run(Profile.model_validate_json(config_json), splits.path, ltv.path, model.path)
    log_result(result, model, metrics)
    for s in result.details["segments"]:
        print(
            f"segment {s['name']}: {s['customers']} customers, revenue share "
            f"{s['revenue_share']:.0%}, mean CLV {s['mean_clv']:.2f}, churn {s['churn_rate']:.0%}"
        )
