"""decide-batch as a KFP task: the ``retention decide-batch`` command in the serving image.

Unlike the training steps (Python functions calling one ``retention`` function), this one is a
container component: batch decisions need the contact ledger, which lives in ``serving`` (the
layers keep ``components`` and ``pipelines`` free of it), so the task runs the same command a
person runs, ``serving.batch.decide_batch`` behind it, in the image that has the serving stack.
"""

from collections.abc import Callable

from kfp import dsl


def decide_batch_component(image: str) -> Callable:
    """The component, run in ``image`` (``serving.image``: the ledger, the models, torch)."""

    @dsl.container_component
    def decide_batch(
        config_json: str,
        customers: str,
        run_id: str,
        send_at: str,
        decisions: dsl.Output[dsl.Dataset],
        rejects: dsl.Output[dsl.Dataset],
        summary: dsl.Output[dsl.Artifact],
    ):
        """Decisions for every customer of ``customers`` (parquet, gs:// or a path), the
        rejected rows and the summary JSON; empty ``run_id`` / ``send_at``: the defaults."""
        return dsl.ContainerSpec(
            image=image,
            command=["retention", "decide-batch"],
            args=[
                "--profile-json", config_json,
                "--input", customers,
                "--run-id", run_id,
                "--send-at", send_at,
                "--out", decisions.path,
                "--rejects", rejects.path,
                "--summary", summary.path,
            ],
        )  # fmt: skip

    return decide_batch
