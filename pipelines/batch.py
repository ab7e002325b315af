"""The batch decision pipeline: ``decide-batch`` over a customer base on Vertex AI Pipelines.

One task, ``components.decide_batch``: the ``retention decide-batch`` command (behind it
``serving.batch.decide_batch``, the function the command line runs: the same chunks, models,
ledger and limits) in the serving image. Its parameters are the customers' parquet (a ``gs://``
URI or a path the task can read), the run id (empty: the send day and a digest of the input) and
the send time (empty: when it runs). The ledger must be one the task can reach
(``serving.ledger.url``, PostgreSQL in a cluster); the resources are ``batch.resources``.
Compile with ``retention compile --pipeline batch``.
"""

from kfp import dsl

from components.decide_batch import decide_batch_component
from pipelines.dag import Target, _place
from retention.config import Profile

TASK = "decide-batch"


def pipeline_name(profile: Profile) -> str:
    return f"{profile.pipeline.name}-batch"


def build_batch_pipeline(profile: Profile, target: Target = "vertex"):
    """A ``@dsl.pipeline`` deciding for ``customers`` under the profile given as JSON."""
    component = decide_batch_component(profile.serving.image)

    @dsl.pipeline(name=pipeline_name(profile), description="Retention batch decisions")
    def retention_batch(
        customers: str,
        config_json: str = profile.model_dump_json(),
        run_id: str = "",
        send_at: str = "",
    ):
        task = component(
            config_json=config_json, customers=customers, run_id=run_id, send_at=send_at
        )
        _place(task, TASK, profile, target, profile.batch.resources)

    return retention_batch
