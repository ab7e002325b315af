"""The monitor pipeline: judge what is served, and submit the training pipeline when a rule fires.

``monitor`` (``retention.registry.monitor.monitor_release``: the champion's training reference
against the decision log, the data batch and the outcomes, by default the profile's
``monitoring.decisions`` / ``batch`` / ``outcomes``, e.g. BigQuery tables) writes its HTML report
and gauges and returns the verdict; under ``dsl.If(retrain)``, ``submit-training`` submits the
compiled training pipeline (``gcp.training_template``) to Vertex AI Pipelines. Compiled, submitted
and scheduled like the training pipeline: ``retention compile|submit|schedule --pipeline monitor``.
"""

from kfp import dsl

from components.factory import build
from components.monitor import monitor, submit_training_component
from pipelines.dag import Target, _place
from retention.config import Profile, Resources

TASK, SUBMIT = "monitor", "submit-training"


def pipeline_name(profile: Profile) -> str:
    return f"{profile.pipeline.name}-monitor"


def build_monitor_pipeline(profile: Profile, target: Target = "vertex"):
    mon = build(monitor, profile, TASK)
    sub = submit_training_component(profile.pipeline.base_image)
    cfg = profile.monitoring
    if not profile.gcp.training_template:
        raise ValueError(
            "gcp.training_template is not set: the monitor pipeline has no training to submit"
        )

    @dsl.pipeline(name=pipeline_name(profile), description="Retention monitor and retrain trigger")
    def retention_monitor(
        config_json: str = profile.model_dump_json(),
        decisions: str = cfg.decisions or "",
        batch: str = cfg.batch or "",
        outcomes: str = cfg.outcomes or "",
        release: str = "",
    ):
        m = mon(
            config_json=config_json,
            decisions=decisions,
            batch=batch,
            outcomes=outcomes,
            release=release,
        )
        _place(m, TASK, profile, target, cfg.resources)
        with dsl.If(m.outputs["Output"] == True, name="retrain"):  # noqa: E712 - KFP DSL
            s = sub(config_json=config_json, template=profile.gcp.training_template)
            _place(s, SUBMIT, profile, target, Resources(cpu="1", memory="2G"))

    return retention_monitor
