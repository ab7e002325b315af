"""Submit a compiled pipeline to Vertex AI Pipelines, or schedule it.

``pipeline``: ``training`` (the DAG; scheduled by ``gcp.schedule_cron``) or ``monitor`` (the
monitor, which submits training when a rule fires; scheduled by ``gcp.monitor_schedule_cron``):
scheduling the monitor instead of training retrains when the served traffic says so, not blindly.

``dry_run`` builds the exact resource the SDK would send (project, location, template, root,
parameters, service account, cron) without credentials or network, which is what the tests check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention.config import Profile


def _require_project(profile: Profile) -> str:
    if not profile.gcp.project:
        raise ValueError("gcp.project is not set in the profile (use --set gcp.project=ID)")
    return profile.gcp.project


PIPELINES = ("training", "monitor")


def _display_name(profile: Profile, pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline: expected one of {', '.join(PIPELINES)}, got {pipeline!r}")
    return profile.pipeline.name if pipeline == "training" else f"{profile.pipeline.name}-monitor"


def build_job(
    profile: Profile, template: str | Path, *, offline: bool = False, pipeline: str = "training"
):
    """An ``aiplatform.PipelineJob`` for the compiled template (offline: anonymous credentials)."""
    from google.cloud import aiplatform

    credentials = None
    if offline:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return aiplatform.PipelineJob(
        display_name=_display_name(profile, pipeline),
        template_path=str(template),
        pipeline_root=profile.pipeline.pipeline_root,
        parameter_values={"config_json": profile.model_dump_json()},
        enable_caching=profile.pipeline.enable_caching,
        labels={"app": "retention", "profile": profile.name}
        | ({"pipeline": pipeline} if pipeline != "training" else {}),
        project=_require_project(profile),
        location=profile.gcp.region,
        credentials=credentials,
    )


def _as_dict(resource) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(type(resource).pb(resource), preserving_proto_field_name=True)


def submit(
    profile: Profile, template: str | Path, *, dry_run: bool = False, pipeline: str = "training"
) -> dict[str, Any]:
    job = build_job(profile, template, offline=dry_run, pipeline=pipeline)
    if dry_run:
        job._gca_resource.service_account = profile.gcp.service_account or ""
        return _as_dict(job._gca_resource)
    job.submit(service_account=profile.gcp.service_account)
    return {"name": job.resource_name, "dashboard": job._dashboard_uri()}


def schedule(
    profile: Profile, template: str | Path, *, dry_run: bool = False, pipeline: str = "training"
) -> dict[str, Any]:
    from google.cloud import aiplatform

    job = build_job(profile, template, offline=dry_run, pipeline=pipeline)
    monitor = pipeline == "monitor"
    cron = profile.gcp.monitor_schedule_cron if monitor else profile.gcp.schedule_cron
    sched = aiplatform.PipelineJobSchedule(
        pipeline_job=job,
        display_name=profile.gcp.monitor_schedule_name if monitor else profile.gcp.schedule_name,
        project=_require_project(profile),
        location=profile.gcp.region,
        credentials=job.credentials,
    )
    if dry_run:
        # The same fields PipelineJobSchedule.create sets before it calls the API.
        sched._gca_resource.cron = cron
        sched._gca_resource.max_concurrent_run_count = 1
        if profile.gcp.service_account:
            sched._gca_resource.create_pipeline_job_request.pipeline_job.service_account = (
                profile.gcp.service_account
            )
        return _as_dict(sched._gca_resource)
    sched.create(
        cron=cron,
        max_concurrent_run_count=1,
        service_account=profile.gcp.service_account,
    )
    return {"name": sched.resource_name}
