"""python -m chunkwise.operator [--namespace NS ...] [--liveness URL] [--verbose]

Runs the kopf operator with chunkwise's handlers. A liveness endpoint is served at
http://0.0.0.0:8080/healthz unless --liveness says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint URL (default %(default)s; '' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=args.liveness or None,
        standalone=True,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
