from kfp.dsl import Dataset, Output


def ingest(config_json: str, dataset: Output[Dataset]) -> str:
    """Read (or synthesise) and validate every dataset of the profile into one Parquet folder."""
    import json

    from retention.config import Profile
    from retention.data.ingest import ingest as run

    manifest = run(Profile.model_validate_json(config_json), dataset.path)
    for name, info in manifest["datasets"].items():
        dataset.metadata[f"{name}_rows"] = info["rows"]
    return json.dumps(manifest)
