"""``obskit bundle``: the observability platform for your own services.

``render`` writes it (compose, collector, Prometheus, Alertmanager, Tempo, Loki, Grafana,
dashboards; or, with ``--target kubernetes``, manifests and chart values) from one set of
parameters, ``params`` lists them, ``push`` sends the dashboards to a
Grafana.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("bundle", help="render the observability platform, or push its "
                       "dashboards to a Grafana")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    def with_set(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change a parameter (repeatable; lists are "
                        "comma-separated); `obskit bundle params` lists them")

    r = bsub.add_parser("render", help="write the bundle's files under --out")
    r.add_argument("--out", required=True, type=Path, help="directory (created if missing)")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 and list the "
                   "files that differ from what would be written")
    r.add_argument("--target", choices=("compose", "kubernetes"), default="compose",
                   help="compose: the docker compose bundle (default); kubernetes: manifests "
                   "and chart values (checked in under deploy/kubernetes)")
    with_set(r)
    r.set_defaults(func=run_render)

    pa = bsub.add_parser("params", help="list the parameters, their defaults and meaning")
    with_set(pa)
    pa.set_defaults(func=run_params)

    pu = bsub.add_parser("push", help="create or update the folder and dashboards on a "
                         "Grafana, by uid (token from GRAFANA_TOKEN)")
    pu.add_argument("--grafana-url", required=True, help="e.g. https://grafana.example.com")
    pu.add_argument("--dry-run", action="store_true", help="show what would change; change "
                    "nothing")
    pu.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    with_set(pu)
    pu.set_defaults(func=run_push)


def _params(args: argparse.Namespace) -> Any:
    from obskit.bundle import ParamError, parse_overrides

    try:
        return parse_overrides(args.overrides)
    except ParamError as exc:
        print(f"obskit bundle: {exc}", file=sys.stderr)
        return None


def run_render(args: argparse.Namespace) -> int:
    from obskit.bundle import render_files

    params = _params(args)
    if params is None:
        return 2
    try:
        files = render_files(params, args.target)
    except ImportError as exc:  # the extra is missing: name the fix, not a traceback
        print(f"obskit bundle: {exc}. Install it with: pip install 'obskit[bundle]'",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"obskit bundle: {exc}", file=sys.stderr)
        return 2
    differ = [rel for rel, text in files.items()
              if not (args.out / rel).exists() or (args.out / rel).read_text() != text]
    if args.check:
        for rel in differ:
            print(f"differs: {args.out / rel}")
        print(f"{len(differ)} of {len(files)} files differ" if differ else
              f"all {len(files)} files are up to date", file=sys.stderr)
        return 1 if differ else 0
    from obskit.bundle import render

    render(args.out, params, args.target)
    for rel in sorted(files):
        print(("wrote     " if rel in differ else "unchanged ") + str(args.out / rel))
    if args.target == "kubernetes":
        print(f"\n{len(differ)} written, {len(files) - len(differ)} unchanged. Install the "
              "operators and charts first (docs/how-to/deploy-on-kubernetes.md), then:\n"
              f"  kubectl apply --server-side -k {args.out}", file=sys.stderr)
        return 0
    print(f"\n{len(differ)} written, {len(files) - len(differ)} unchanged. Start it with:\n"
          f"  export GRAFANA_ADMIN_PASSWORD=choose-a-password\n"
          f"  docker compose -f {args.out / 'docker-compose.observability.yml'} up -d\n"
          f"then open http://{params.bind_address}:{params.grafana_port}", file=sys.stderr)
    return 0


def run_params(args: argparse.Namespace) -> int:
    from obskit.bundle import PARAMS

    params = _params(args)
    if params is None:
        return 2
    for f in PARAMS:
        value = getattr(params, f.name)
        shown = ",".join(value) if isinstance(value, list) else str(value)
        print(f"{f.name} = {shown}\n    {f.metadata['doc']}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from obskit.bundle._push import PushError, credential_from_env, push

    params = _params(args)
    if params is None:
        return 2
    verb = "would" if args.dry_run else "did"

    def show(change: Any) -> None:
        label = change.action if not args.dry_run or change.action == "unchanged" else \
            f"{verb} {change.action}"
        print(f"{label:<14} {change.kind:<9} {change.uid:<28} {change.title}")
        for line in change.details:
            print(f"{'':<24}{line}")

    try:
        changes = push(args.grafana_url, params, dry_run=args.dry_run,
                       credential=credential_from_env(), timeout=args.timeout, on_change=show)
    except PushError as exc:
        print(f"obskit bundle push: {exc}", file=sys.stderr)
        return 1
    n = sum(c.action != "unchanged" for c in changes)
    outcome = "would change (dry run: nothing written)" if args.dry_run else "changed"
    print(f"\n{n} of {len(changes)} {outcome}", file=sys.stderr)
    return 0
