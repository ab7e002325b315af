"""Compile the DAG to pipeline-spec YAML for Vertex AI (one document) or KFP on GKE."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kfp import compiler

from pipelines.dag import Target, build_pipeline
from retention.config import Profile


def compile_pipeline(
    profile: Profile, target: Target, out: str | Path, pipeline: str = "training"
) -> Path:
    """Write the YAML atomically. ``kfp`` output carries a second document (platform spec).

    ``pipeline``: ``training`` (the DAG), ``batch`` (``pipelines/batch.py``, decide-batch) or
    ``monitor`` (``pipelines/monitor.py``: the monitor, which submits training on a rule).
    """
    if target == "local":
        raise ValueError("compile for 'vertex' or 'kfp'; 'local' runs with `retention run`")
    if pipeline == "training":
        func, name = build_pipeline(profile, target=target), profile.pipeline.name
    elif pipeline == "batch":
        from pipelines.batch import build_batch_pipeline, pipeline_name

        func, name = build_batch_pipeline(profile, target=target), pipeline_name(profile)
    elif pipeline == "monitor":
        from pipelines.monitor import build_monitor_pipeline
        from pipelines.monitor import pipeline_name as monitor_name

        func, name = build_monitor_pipeline(profile, target=target), monitor_name(profile)
    else:
        raise ValueError(f"pipeline: expected training, batch or monitor, got {pipeline!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".yaml", dir=out.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(func, package_path=tmp, pipeline_name=name)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
