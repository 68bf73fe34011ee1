"""python -m chunkwise.operator [--namespace NS ...] [--liveness URL] [--metrics HOST:PORT]

Runs the kopf operator with chunkwise's handlers. A liveness endpoint is served at
http://0.0.0.0:8080/healthz and Prometheus metrics at http://0.0.0.0:9101/metrics unless
--liveness and --metrics say otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import kopf

from chunkwise.contract import Ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint URL (default %(default)s; '' to disable)")
    parser.add_argument("--metrics", default=f"0.0.0.0:{Ports.OPERATOR_METRICS}",
                        metavar="HOST:PORT",
                        help="serve per-DataMigration metrics at http://HOST:PORT/metrics "
                             "(default %(default)s; '' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=args.liveness or None,
        standalone=True,
        memo=kopf.Memo(metrics_address=args.metrics),
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
