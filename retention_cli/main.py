"""The ``retention`` command: the composition root, the one place allowed to import every layer."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

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
    if args.dry_run:
        # Never probe the metadata server; a real submission may need it (a task on Vertex AI).
        os.environ.setdefault("NO_GCE_CHECK", "true")
    from pipelines import vertex
    from pipelines.compile import compile_pipeline

    profile = _profile_from_json(args.profile_json) if args.profile_json else _load(args)
    pipeline = getattr(args, "pipeline", "training")
    path = profile.gcp.template_path
    if pipeline != "training":
        path = str(Path(path).with_name(f"{Path(path).stem}-{pipeline}.yaml"))
    template = args.template or compile_pipeline(profile, "vertex", path, pipeline)
    fn = vertex.submit if which == "submit" else vertex.schedule
    req = fn(profile, template, dry_run=args.dry_run, pipeline=pipeline)
    print(json.dumps(req, indent=2)[:20000])
    return 0


def _profile_from_json(text: str):
    from pydantic import ValidationError

    from retention.config import Profile

    try:
        return Profile.model_validate_json(text)
    except ValidationError as err:
        raise ConfigError(f"--profile-json: not a valid profile ({err})") from None


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
        choices=["training", "batch", "monitor"],
        default="training",
        help="the training DAG, the batch decisions (decide-batch), or the monitor (which "
        "submits training when a rule fires)",
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
            "--profile-json",
            help="the whole profile as JSON instead of --profile (what a pipeline task passes)",
        )
        p.add_argument(
            "--pipeline",
            choices=["training", "monitor"],
            default="training",
            help="the training DAG, or the monitor pipeline (schedule it to retrain on its "
            "verdict instead of blindly)",
        )
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
    _add_ope(sub)
    _add_models(sub)
    _add_monitor(sub)
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


def cmd_ope(args) -> int:
    from retention.decision.ope_log import evaluate_policy, read_log
    from retention.fileio import write_json

    log = read_log(args.log, args.outcomes, args.observations)
    est = evaluate_policy(args.policy, log, max_weight=args.max_weight, seed=args.seed)
    print(f"{est.decisions} logged decisions; the logged policy earned {est.logged_value:.3f} each")
    for name in ("ips", "snips", "dr"):
        e = getattr(est, name)
        print(f"  {name:<6} {e['value']:9.3f}  95 % [{e['low']:.3f}, {e['high']:.3f}]  "
              f"ESS {e['ess']:.0f}  clipped {100 * e['clipped_share']:.1f} %")  # fmt: skip
    print(f"  DR gain over the logged policy: [{est.gain_low:+.3f}, {est.gain_high:+.3f}]")
    if args.out:
        write_json(args.out, est.as_dict())
        print(f"wrote {args.out}")
    return 0


def _add_ope(sub) -> None:
    p = sub.add_parser(
        "ope", help="off-policy value of a policy export on a decision log (IPS, SNIPS, DR)"
    )
    p.add_argument("log", help="the ledger's export_decisions file (CSV or Parquet)")
    p.add_argument("--policy", required=True, help="a policy export folder (policy.json)")
    p.add_argument("--outcomes", required=True, help="request_id, reward")
    p.add_argument("--observations", required=True, help="request_id + the 18 observation columns")
    p.add_argument("--max-weight", type=float, default=20.0, help="importance-weight clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the estimates as JSON here")
    p.set_defaults(func=cmd_ope)


def _add_ab_report(sub) -> None:
    p = sub.add_parser("ab-report", help="A/B report: retention uplift, revenue, spend and ROI")
    p.add_argument("outcomes", help="CSV/Parquet: customer_id, arm, contacted, offer_cost, ...")
    p.add_argument("--out", help="also write the report as JSON here")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the ROI")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_ab_report)


def _registry(profile):
    from retention.registry.registry import Registry
    from retention.store.model_store import ModelStore

    return Registry(ModelStore(profile.model_store))


def _reload(url: str) -> dict:
    """Ask a running serving stack to load the production release now."""
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--reload: expected an http(s) URL, got {url!r}")
    endpoint = f"{url.rstrip('/')}/admin/reload"
    req = urllib.request.Request(endpoint, method="POST", data=b"")  # noqa: S310 - checked
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - scheme checked
            return json.loads(resp.read())
    except OSError as err:
        raise ConnectionError(f"reload at {url}: {err}") from None


def cmd_models(args) -> int:
    from retention.registry.registry import dumps, format_listing

    profile = _load(args)
    reg = _registry(profile)
    if args.action == "list":
        print(format_listing(reg.listing()))
        return 0
    if args.action == "show":
        print(dumps(reg.get(reg.resolve(args.release)).model_dump()))
        return 0
    vertex = profile.registry.backend == "vertex" or args.vertex_dry_run
    if args.vertex_dry_run or args.dry_run:
        os.environ.setdefault("NO_GCE_CHECK", "true")  # a dry run never probes the network
    if args.action == "upload":
        from retention.registry.vertex import upload_release

        entry = reg.get(reg.resolve(args.release))
        promote = reg.aliases().get("champion") == entry.release
        out = upload_release(profile, reg, entry, promote=promote, dry_run=args.vertex_dry_run)
        print(dumps(out))
        return 0
    if args.dry_run:
        target = reg.rollback_target() if args.action == "rollback" else reg.resolve(args.release)
        print(f"would make {target} production (champion); nothing written")
        if vertex:
            from retention.registry.vertex import move_aliases

            print(dumps(move_aliases(profile, reg.get(target), dry_run=True)))
        return 0
    pointer = reg.rollback() if args.action == "rollback" else reg.promote(args.release)
    print(f"production is release {pointer['release']} ({args.action})")
    if vertex:
        from retention.registry.vertex import move_aliases

        moved = move_aliases(profile, reg.get(pointer["release"]), dry_run=args.vertex_dry_run)
        print(dumps(moved))
    if profile.serving.apply:
        from retention.deploy.apply import apply_manifests
        from retention.deploy.manifests import render

        print("applied:", ", ".join(apply_manifests(render(profile, pointer))))
    if args.reload:
        print(dumps(_reload(args.reload)))
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="the model registry: list, show, promote, rollback")
    msub = p.add_subparsers(dest="action", required=True)
    for name, help_ in (
        ("list", "every registered release, newest first, with its aliases"),
        ("show", "one release: metrics, gates, data fingerprint, code version"),
        ("promote", "make a release (or the challenger) the champion: production"),
        ("rollback", "make the previous champion production again"),
        ("upload", "register a release in Vertex AI Model Registry"),
    ):
        q = msub.add_parser(name, help=help_)
        _profile_args(q)
        if name in ("show", "promote", "upload"):
            q.add_argument("release", help="a release, or champion / challenger")
        if name in ("promote", "rollback"):
            q.add_argument("--dry-run", action="store_true", help="say what would change")
            q.add_argument(
                "--reload",
                metavar="URL",
                help="then ask the serving stack at URL to load it (POST URL/admin/reload)",
            )
        q.add_argument(
            "--vertex-dry-run",
            action="store_true",
            help="print the Vertex AI Model Registry requests instead of sending them",
        )
        q.set_defaults(func=cmd_models, dry_run=False, reload=None)


def cmd_monitor(args) -> int:
    from retention.registry.monitor import act_on, monitor_release

    profile = _load(args)
    report, paths, stored = monitor_release(
        profile,
        args.decisions,
        batch=args.batch,
        outcomes=args.outcomes,
        release=args.release,
        out_dir=args.out,
    )
    print(report.summary())
    print(f"report: {paths['html']} (json, gauges beside it); stored at {stored}", flush=True)

    def retrain() -> int:
        print("a rule fired: running the training DAG", flush=True)
        return cmd_run(args)

    code = act_on(report, retrain=args.retrain, run=retrain)
    if code is not None:
        return code
    return 4 if report.retrain else 0


def _add_monitor(sub) -> None:
    p = sub.add_parser(
        "monitor",
        help="drift and calibration of what is served against the release; retrain or not",
    )
    _profile_args(p)
    p.add_argument("--decisions", help="the decision log (default: monitoring.decisions)")
    p.add_argument("--batch", help="new customer rows (default: monitoring.batch)")
    p.add_argument("--outcomes", help="customer_id, churned (default: monitoring.outcomes)")
    p.add_argument("--release", help="the release to judge (default: the champion)")
    p.add_argument("--out", help="report folder (default: a temporary one; the store keeps one)")
    p.add_argument("--retrain", action="store_true", help="run the training DAG when a rule fires")
    p.set_defaults(func=cmd_monitor)


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
