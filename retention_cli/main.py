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
    print(format_summary(summary, profile.model_store), flush=True)
    if summary.run.failure:
        return 1
    return 0 if summary.gates.get("passed") else 3


def cmd_compile(args) -> int:
    from pipelines.compile import compile_pipeline

    out = compile_pipeline(_load(args), args.target, args.output, args.pipeline)
    print(f"wrote the {args.pipeline} pipeline's {args.target} spec to {out}")
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
    from retention.results import RiskResult

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
    model, result, curves = train_binary(
        parts["train"], parts["valid"], parts["test"], cols, cfg, seed, result=RiskResult
    )
    save_outputs(args.out, model, result, curves)
    keys = (
        "test_auc",
        "test_auc_ci_low",
        "test_auc_ci_high",
        "test_ece",
        "test_brier",
        "cv_auc",
        "oof_ece",
    )
    measured = result.scalars()
    print(json.dumps({k: round(measured[k], 4) for k in keys if k in measured}, indent=2))
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
    p.add_argument(
        "--pipeline",
        choices=["training", "batch"],
        default="training",
        help="the training DAG, or the batch decisions (decide-batch)",
    )
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
    _add_serving(sub)
    _add_decide_batch(sub)
    _add_ab_report(sub)
    return parser


def _profile_argv(args) -> list[str]:
    """The profile flags again, for a child process."""
    out = ["--profile", args.profile] if args.profile else []
    out += ["--config", args.config] if args.config else []
    for o in args.overrides:
        out += ["--set", o]
    return out


def cmd_serve(args) -> int:
    from serving.server import serve_stack

    return serve_stack(_load(args), _profile_argv(args), args.host, args.port)


def cmd_serve_model(args) -> int:
    from serving.server import serve_model

    serve_model(_load(args), args.name, args.host, args.port, args.model_dir)
    return 0


def _add_serving(sub) -> None:
    p = sub.add_parser("serve", help="serve the whole stack on loopback from the model store")
    _profile_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="transformer port; predictors on +1")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("serve-model", help="one model server (what an InferenceService runs)")
    from retention import catalogue

    p.add_argument(
        "name",
        help=f"{catalogue.ORCHESTRATOR}, predictors (all), or one of "
        f"{', '.join(catalogue.services())}",
    )
    _profile_args(p)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's server
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model-dir", help="the model's files (KServe mounts /mnt/models)")
    p.set_defaults(func=cmd_serve_model)


def cmd_decide_batch(args) -> int:
    from datetime import datetime

    from pydantic import ValidationError

    from retention.config import Profile
    from serving.batch import decide_batch, offer_names

    if args.profile_json:
        if args.profile or args.config or args.overrides:
            raise ValueError("--profile-json: give the profile as JSON or by name, not both")
        try:
            profile = Profile.model_validate_json(args.profile_json)
        except ValidationError as err:
            raise ConfigError(f"--profile-json: not a valid profile ({err})") from None
    else:
        profile = _load(args)
    send_at = None
    if args.send_at:
        try:
            send_at = datetime.fromisoformat(args.send_at)
        except ValueError:
            raise ValueError(f"--send-at: not an ISO date-time: {args.send_at!r}") from None
    summary = decide_batch(
        profile,
        args.input,
        args.out,
        run_id=args.run_id or None,
        send_at=send_at,
        engine=args.engine,
        rejects=args.rejects,
        summary_path=args.summary,
    )
    print(summary.format(offer_names(profile)), flush=True)
    return 0


def _add_decide_batch(sub) -> None:
    p = sub.add_parser(
        "decide-batch",
        help="decide for a whole customer base (parquet): risk, value, policy, limits, message",
    )
    _profile_args(p)
    p.add_argument("--input", required=True, help="customers: a parquet file or folder")
    p.add_argument(
        "--out",
        required=True,
        help="decisions parquet; the rejected rows and the summary are written beside it",
    )
    p.add_argument(
        "--run-id",
        help="decisions are recorded per customer and run id, so a re-run charges nothing "
        "twice (default: the send day and a digest of the input)",
    )
    p.add_argument(
        "--send-at",
        help="when the contacts go out, ISO with offset (default: now); quiet hours and the "
        "budget period are judged at it",
    )
    p.add_argument("--engine", choices=["local", "ray"], help="default: batch.engine")
    p.add_argument("--rejects", help="where the rejected rows go (default: beside --out)")
    p.add_argument("--summary", help="where the summary JSON goes (default: beside --out)")
    p.add_argument(
        "--profile-json",
        help="the whole profile as JSON instead of --profile (what a pipeline task passes)",
    )
    p.set_defaults(func=cmd_decide_batch)


def cmd_ab_report(args) -> int:
    from retention.experiments.ab import ab_report
    from retention.fileio import write_json

    report = ab_report(args.outcomes, resamples=args.resamples, seed=args.seed)
    print(report.format_table())
    if args.out:
        write_json(args.out, report.model_dump(mode="json"))  # temp file + os.replace
        print(f"wrote {args.out}")
    return 0


def _add_ab_report(sub) -> None:
    p = sub.add_parser("ab-report", help="A/B report: retention uplift, revenue, spend and ROI")
    p.add_argument("outcomes", help="CSV/Parquet: customer_id, arm, contacted, offer_cost, ...")
    p.add_argument("--out", help="also write the report as JSON here")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the ROI")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_ab_report)


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
    except ConnectionError as exc:  # e.g. the contact ledger's database is unreachable
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
