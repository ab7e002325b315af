"""monitor and submit-training: the two steps of the monitor pipeline (``pipelines/monitor.py``)."""

from collections.abc import Callable

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output


def monitor(
    config_json: str,
    decisions: str,
    batch: str,
    outcomes: str,
    release: str,
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Judge the release (empty: the champion) on the decision log, the batch and the outcomes
    (empty: the profile's ``monitoring.*``); the HTML report; True when a rule fired."""
    import shutil

    from retention.config import Profile
    from retention.monitoring.report import gauges
    from retention.registry.monitor import monitor_release

    result, paths, stored = monitor_release(
        Profile.model_validate_json(config_json),
        decisions or None,
        batch=batch or None,
        outcomes=outcomes or None,
        release=release or None,
    )
    shutil.copyfile(paths["html"], report.path)
    for name, _, labels, value in gauges(result):
        extra = ".".join(v for k, v in sorted(labels.items()) if k != "release")
        metrics.log_metric(f"{name.removeprefix('retention_monitor_')}.{extra}".rstrip("."), value)
    print(result.summary())
    print(f"report stored at {stored}")
    return result.retrain


def submit_training_component(image: str) -> Callable:
    """Submitting the training pipeline, as a container running ``retention submit`` (the CLI
    wires the pipeline layer; a component does not import it) in ``image``."""

    @dsl.container_component
    def submit_training(config_json: str, template: str):
        """Submit the compiled training pipeline ``template`` under the profile ``config_json``."""
        return dsl.ContainerSpec(
            image=image,
            command=["retention", "submit"],
            args=["--profile-json", config_json, "--template", template],
        )

    return submit_training
