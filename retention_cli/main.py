"""The ``retention`` command: the composition root, the one place allowed to import every layer."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from retention.config import ConfigError, load_profile


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="profile name under configs/ (default: local)")
    p.add_argument("--config", help="path to a profile YAML instead of a named profile")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile key, e.g. --set risk.max_depth=5 (repeatable)",
    )


def _load(args):
    return load_profile(args.profile, config=args.config, overrides=args.overrides)


def cmd_run(args) -> int:
    from pipelines.local_run import format_summary, run_local

    profile = _load(args)
    print(f"running the training DAG locally with profile '{profile.name}'", flush=True)
    summary = run_local(profile)
    print(format_summary(summary, profile.model_store))
    return 0 if summary.gates.get("passed") else 3


def cmd_compile(args) -> int:
    from pipelines.compile import compile_pipeline

    out = compile_pipeline(_load(args), args.target, args.output)
    print(f"wrote {args.target} pipeline spec to {out}")
    return 0


def cmd_submit(args, which: str) -> int:
    os.environ.setdefault("NO_GCE_CHECK", "true")  # never probe the metadata server
    from pipelines import vertex
    from pipelines.compile import compile_pipeline

    profile = _load(args)
    template = args.template or compile_pipeline(profile, "vertex", profile.gcp.template_path)
    fn = vertex.submit if which == "submit" else vertex.schedule
    print(json.dumps(fn(profile, template, dry_run=args.dry_run), indent=2)[:20000])
    return 0


def cmd_train_risk(args) -> int:
    from retention.config import BinaryTrainerConfig, DatasetSpec, SplitConfig
    from retention.data.split import split_frame
    from retention.data.validate import parse_table, validate_table
    from retention.fileio import read_bytes
    from retention.models.binary import Columns, train_binary
    from retention.models.outputs import save_outputs

    spec = DatasetSpec(
        uri=args.data,
        target=args.target,
        positive=args.positive,
        id_column=args.id,
        drop=args.drop,
        sep=args.sep,
    )
    df = validate_table(parse_table(read_bytes(args.data), args.data, spec), args.data, spec)
    profile = _load(args) if (args.profile or args.config) else None
    cfg = profile.risk if profile else BinaryTrainerConfig()
    seed = profile.seed if profile else 42
    parts = split_frame(df, spec, profile.split if profile else SplitConfig(), seed)
    cols = Columns(target=args.target, id_column=args.id)
    model, metrics, curves = train_binary(
        parts["train"], parts["valid"], parts["test"], cols, cfg, seed
    )
    save_outputs(args.out, model, metrics, curves)
    keys = (
        "test_auc",
        "test_auc_ci_low",
        "test_auc_ci_high",
        "test_ece",
        "test_brier",
        "cv_auc",
        "oof_ece",
    )
    print(json.dumps({k: round(metrics[k], 4) for k in keys if k in metrics}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retention", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the whole DAG locally with kfp.local")
    _profile_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="compile the DAG to pipeline-spec YAML")
    _profile_args(p)
    p.add_argument("--target", choices=["vertex", "kfp"], default="vertex")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_compile)

    for name, help_ in (
        ("submit", "submit a run to Vertex AI Pipelines"),
        ("schedule", "create a Vertex AI pipeline schedule"),
    ):
        p = sub.add_parser(name, help=help_)
        _profile_args(p)
        p.add_argument("--template", help="compiled YAML (default: compile now)")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print the request that would be sent; needs no credentials",
        )
        p.set_defaults(func=lambda a, n=name: cmd_submit(a, n))

    train = sub.add_parser("train", help="train one model on any CSV/Parquet")
    tsub = train.add_subparsers(dest="model", required=True)
    p = tsub.add_parser("risk", help="calibrated XGBoost classifier for any binary target")
    _profile_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--positive", required=True, help="label value of the positive class")
    p.add_argument("--id", default=None)
    p.add_argument("--drop", nargs="*", default=[])
    p.add_argument("--sep", default=",")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_risk)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
