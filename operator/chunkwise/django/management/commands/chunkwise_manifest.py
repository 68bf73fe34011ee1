"""manage.py chunkwise_manifest: the DataMigrations a release still has to run.

One DataMigration per BatchedRunPython of an applied migration whose checkpoint is not
done: the ones ``migrate`` deferred (and any a local run left unfinished). A pipeline
step pipes it to ``kubectl apply -f -`` after ``migrate``, then waits with
``kubectl wait --for=condition=Succeeded``.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader

from chunkwise.contract import (
    GROUP_VERSION,
    KIND,
    WORKER_CONTAINER,
    ExitCode,
    ShardState,
    data_migration_name,
)

from ...execute import recorded
from ...migration_lookup import app_problems
from ...operation_ref import OperationRef
from ...operations import BatchedRunPython
from .chunkwise_run import one_line_usage_errors


class Command(BaseCommand):
    help = ("Print a DataMigration manifest for every batched operation of an applied "
            "migration that is not done (what migrate deferred), for kubectl apply -f -.")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_usage_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("app_label", nargs="*", help="only these apps (default: all)")
        parser.add_argument("--image", required=True,
                            help="the release's application image the worker pods run "
                                 "(spec.image); required")
        parser.add_argument("--namespace", "-n", help="metadata.namespace (default: kubectl's)")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS,
                            help="database alias to read checkpoints from; also spec.database")
        parser.add_argument("--service-account", metavar="NAME",
                            help="the worker pods' ServiceAccount (it must be allowed to "
                                 "patch datamigrations/status)")
        parser.add_argument("--env-from-secret", metavar="NAME", action="append", default=[],
                            help="a Secret whose keys become the worker's environment (the "
                                 "database settings); repeatable")
        parser.add_argument("--output", "-o", choices=["yaml", "json"], default="yaml",
                            help="yaml (one document per DataMigration) or json (a v1 List)")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if alias not in connections:
            raise CommandError(f"--database: no database alias {alias!r} in settings.DATABASES",
                               returncode=ExitCode.USAGE)
        if not options["image"].strip() or any(c.isspace() for c in options["image"]):
            raise CommandError(f"--image: expected an image reference such as "
                               f"registry.example.com/shop:1.4.2, got {options['image']!r}",
                               returncode=ExitCode.USAGE)
        manifests = [self._manifest(app, name, index, several, options)
                     for app, name, index, several in self._pending(alias, options["app_label"])]
        if options["output"] == "json":
            self.stdout.write(json.dumps({"apiVersion": "v1", "kind": "List",
                                          "items": manifests}, indent=2))
        elif manifests:
            self.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False), ending="")
        if not manifests:
            self.stderr.write("no batched operation left to run")

    def _pending(self, alias: str, apps: list[str]) -> list[tuple[str, str, int, bool]]:
        loader = MigrationLoader(connections[alias])
        problems = app_problems(apps, loader)
        if problems:
            raise CommandError("; ".join(problems), returncode=ExitCode.USAGE)
        pending = []
        for key in sorted(loader.applied_migrations):
            migration = loader.disk_migrations.get(key)
            if migration is None or (apps and key[0] not in apps):
                continue
            batched = [i for i, op in enumerate(migration.operations)
                       if isinstance(op, BatchedRunPython)]
            pending += [(key[0], key[1], i, len(batched) > 1) for i in batched
                        if recorded(OperationRef(key[0], key[1], i), alias)[0]
                        != ShardState.DONE]  # done: every shard's checkpoint is
        return pending

    def _manifest(self, app: str, migration: str, index: int, several: bool,
                  options: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": data_migration_name(app, migration, index if several else None)}
        if options["namespace"]:
            metadata["namespace"] = options["namespace"]
        spec: dict[str, Any] = {"image": options["image"],
                                "migration": {"app": app, "name": migration, "operation": index}}
        if options["database"] != DEFAULT_DB_ALIAS:
            spec["database"] = options["database"]
        pod: dict[str, Any] = {}
        if options["service_account"]:
            pod["serviceAccountName"] = options["service_account"]
        if options["env_from_secret"]:
            pod["containers"] = [{"name": WORKER_CONTAINER, "envFrom": [
                {"secretRef": {"name": secret}} for secret in options["env_from_secret"]]}]
        if pod:
            spec["template"] = {"spec": pod}
        # batch size and timeouts are the operation's own: the worker reads them from it
        return {"apiVersion": GROUP_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
