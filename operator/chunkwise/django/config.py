"""Run settings from three places, in order: the operation's arguments, then
``CHUNKWISE_*`` environment variables (how the operator's Job passes the
DataMigration spec to the pod, and how ``migrate`` can be tuned), then
command-line flags. Every tunable is defined once, in :data:`chunkwise.engine.TUNABLES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from chunkwise.contract import Env
from chunkwise.engine import (
    TUNABLES,
    Caller,
    RunSettings,
    SettingsError,
    parse_boolean,
    tunable_named,
)

__all__ = ["REPLICAS", "SETTINGS", "add_arguments", "defer_by_default", "known_env_names",
           "misspelled", "parse_port", "resolve_settings"]

#: the Django setting naming the databases (aliases in DATABASES) that replicate a
#: MariaDB/MySQL database, read for its replication lag (a primary does not know it)
REPLICAS = "CHUNKWISE_REPLICAS"
#: the Django settings chunkwise reads
SETTINGS = frozenset({Env.DEFER, REPLICAS})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tuning (each also read from its CHUNKWISE_* env var)")
    for tunable in TUNABLES:
        group.add_argument(f"--{tunable.option}", dest=tunable.dest, metavar="VALUE",
                           help=f"{tunable.help}; default {tunable.default} "
                                f"[env {tunable.env}, spec.{tunable.spec}]")


def resolve_settings(
    base: RunSettings,
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
    caller: Caller = Caller.COMMAND,
) -> RunSettings:
    """``base`` overridden by env, then by flags. An error names the value as ``caller``'s
    user gave it (``batch.size (--batch-size)``, ``spec.batch.size`` in a pod), whether it
    does not parse or lies out of bounds; a tunable the user did not set by the name they
    would set it by."""
    changes: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for tunable in TUNABLES:
        if flags and flags.get(tunable.dest) is not None:
            raw, source = str(flags[tunable.dest]), f"--{tunable.option}"
        elif env.get(tunable.env, "") != "":
            raw, source = env[tunable.env], tunable.env
        else:
            continue
        names[tunable.spec] = caller.given(tunable, source)
        changes.setdefault(tunable.group, {})[tunable.field] = \
            tunable.parse(raw, names[tunable.spec])
    try:
        groups = {
            group: dataclasses.replace(getattr(base, group), **fields)
            for group, fields in changes.items()
        }
        return dataclasses.replace(base, **groups)
    except SettingsError as exc:  # a bound, checked by the settings themselves
        if exc.field is None or exc.field not in {t.spec for t in TUNABLES}:
            raise
        raise exc.named(names.get(exc.field) or caller.knob(tunable_named(exc.field))) from None


def parse_port(raw: str | None, name: str) -> int | None:
    """A TCP port from a flag or env var; None when unset or empty (no metrics)."""
    if raw is None or str(raw).strip() == "":
        return None
    try:
        port = int(str(raw).strip())
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise SettingsError(f"{name}: expected a TCP port number 1-65535, got {raw!r}")
    return port


def defer_by_default(env: Mapping[str, str], setting: object) -> bool:
    """Whether ``migrate`` defers a BatchedRunPython that does not say (``defer=None``):
    the ``CHUNKWISE_DEFER`` environment variable, else the ``CHUNKWISE_DEFER`` Django
    setting, else no (a developer's ``migrate`` runs it inline with its progress bar)."""
    raw = env.get(Env.DEFER, "")
    if raw.strip():
        return parse_boolean(raw, Env.DEFER)
    if not isinstance(setting, bool):
        raise SettingsError(f"settings.CHUNKWISE_DEFER: expected True or False, got "
                            f"{setting!r}")
    return setting


#: what Kubernetes puts in every pod's environment for each Service of its namespace
#: ("service links"): a Service named chunkwise-metrics gives CHUNKWISE_METRICS_SERVICE_HOST
#: and CHUNKWISE_METRICS_PORT_9101_TCP_ADDR, which are nobody's misspelling
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)"
                           r"(_PROTO|_PORT|_ADDR)?)?)$")


def misspelled(names: Iterable[str], known: Iterable[str]) -> list[tuple[str, str]]:
    """Each ``CHUNKWISE_*`` name of ``names`` (in any case) that chunkwise does not read,
    with the closest one it does ("" when none is close): a misspelled name would be ignored
    without a word, and a misspelled ``CHUNKWISE_DEFER`` runs a whole migration inline."""
    # compared without the prefix that every name shares, or any name is "close"
    by_rest = {name.removeprefix(Env.PREFIX): name for name in known}

    def closest(name: str) -> str:
        found = difflib.get_close_matches(name.upper().removeprefix(Env.PREFIX),
                                          sorted(by_rest), n=1, cutoff=0.6)
        return by_rest[found[0]] if found else ""

    return [(name, closest(name)) for name in sorted(names)
            if name.upper().startswith(Env.PREFIX) and name not in by_rest.values()
            and not name.startswith(Env.OPERATOR_PREFIX) and not _SERVICE_LINK.search(name)]


def known_env_names() -> frozenset[str]:
    """Every ``CHUNKWISE_*`` environment variable chunkwise reads."""
    return Env.names() | {tunable.env for tunable in TUNABLES} | Env.TOOLING
