"""The ``obskit`` command; each sub-command is a module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# module, in the order shown by --help. Imported lazily so `obskit doctor` works without the
# rabbitmq extra installed.
_COMMANDS = ("doctor", "orders", "dlq", "audit", "bundle")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obskit", description="obskit: observability and loss-proof messaging for orders."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"obskit.cli.{name}")
        except ImportError as exc:  # an optional extra is missing
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(func=_unavailable(name, exc))
            continue
        module.register(sub)
    return parser


def _unavailable(name: str, exc: ImportError):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        print(f"obskit {name}: {exc}. Install it with: pip install 'obskit[rabbitmq]'",
              file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `obskit ... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
