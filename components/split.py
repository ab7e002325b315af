from kfp.dsl import Dataset, Input, Output


def split(config_json: str, dataset: Input[Dataset], splits: Output[Dataset]) -> str:
    """Stratified (or time-ordered / grouped) train/valid/test splits as Parquet."""
    import json

    from retention.config import Profile
    from retention.data.split import split as run

    summary = run(Profile.model_validate_json(config_json), dataset.path, splits.path)
    return json.dumps(summary)
