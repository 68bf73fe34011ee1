#!/usr/bin/env python3
"""Build chunkwise's Grafana dashboard in code, from the metric names in chunkwise.metrics.

    .venv/bin/python scripts/dashboard.py            # rewrite charts/chunkwise/files/dashboard.json
    .venv/bin/python scripts/dashboard.py --check    # fail if that file is not what this builds

Built with Grafana's foundation SDK (grafana-foundation-sdk on PyPI) rather than kept
as hand-edited JSON: the panels name metrics through ``chunkwise.metrics.Name``, so a
renamed metric cannot leave a panel querying nothing, and the JSON is reviewed as
generated output. The chart ships the generated file (``dashboards.enabled``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef, VariableRefresh

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from chunkwise.metrics import Name  # noqa: E402

OUTPUT = REPO / "charts" / "chunkwise" / "files" / "dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: the DataMigrations the dashboard shows (its variables)
SELECTED = 'namespace=~"$namespace", migration=~"$migration"'
WINDOW = "$__rate_interval"
BY_MIGRATION = "{{namespace}}/{{migration}}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = BY_MIGRATION


def rate(name: str, by: str = "namespace, migration") -> str:
    return f"sum by ({by}) (rate({name}{{{SELECTED}}}[{WINDOW}]))"


def quantiles(histogram: str) -> list[Query]:
    series = f"{histogram}_bucket{{{SELECTED}}}"
    buckets = f"sum by (le, namespace, migration) (rate({series}[{WINDOW}]))"
    return [Query(f"histogram_quantile({q}, {buckets})", f"{BY_MIGRATION} p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)]


def targets(queries: list[Query]) -> list[prometheus.Dataquery]:
    return [prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(65 + i))
            .datasource(DATASOURCE) for i, q in enumerate(queries)]


def graph(title: str, description: str, unit: str, queries: list[Query],
          width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(8).span(width).fill_opacity(10)
             .legend(common.VizLegendOptions().show_legend(True)
                     .display_mode(LegendDisplayMode.TABLE)
                     .placement(LegendPlacement.BOTTOM)))
    for target in targets(queries):
        panel = panel.with_target(target)
    return panel


def figure(title: str, description: str, unit: str, queries: list[Query],
           width: int = 6) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(8).span(width)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])))
    for target in targets(queries):
        panel = panel.with_target(target.instant())
    return panel


def build() -> Dashboard:
    sel = SELECTED
    variables = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
        .query(f"label_values({Name.PHASE}, namespace)").multi(True).include_all(True)
        .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED),
        dash.QueryVariable("migration").label("DataMigration").datasource(DATASOURCE)
        .query(f'label_values({Name.PHASE}{{namespace=~"$namespace"}}, migration)')
        .multi(True).include_all(True).all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED),
    ]
    progress = (bargauge.Panel().title("Progress").description(
        "Rows processed over rows estimated, from each DataMigration's status.")
        .unit("percentunit").min(0).max(1).datasource(DATASOURCE).height(8).span(6))
    for target in targets([Query(f"{Name.PROGRESS}{{{sel}}}")]):
        progress = progress.with_target(target.instant())
    board = (
        dash.Dashboard("chunkwise: DataMigrations").uid("chunkwise")
        .tags(["chunkwise", "django", "postgresql"]).refresh("30s").time("now-6h", "now")
        .timezone("browser").editable().variables(variables)
        .description("Batched Django data migrations run by the chunkwise operator.")
        .with_row(dash.Row("Where each migration stands"))
        .with_panel(graph(
            "Rows per second",
            "live: committed rows/s from the worker pods (rate of "
            f"{Name.ROWS_PROCESSED}); reported: the status figure (last minute while "
            "Running, the whole run once ended), which outlives the pod.",
            "suffix: rows/s",
            [Query(rate(Name.ROWS_PROCESSED), f"{BY_MIGRATION} live"),
             Query(f"{Name.ROWS_PER_SECOND}{{{sel}}}", f"{BY_MIGRATION} reported")]))
        .with_panel(progress)
        .with_panel(figure("ETA", "Time left at the current rate (Running migrations).", "s",
                           [Query(f"{Name.ETA}{{{sel}}}")]))
        .with_panel(figure(
            "Migrations by phase", "How many DataMigrations are in each phase.", "none",
            [Query(f'sum by (phase) ({Name.MIGRATIONS}{{namespace=~"$namespace"}})',
                   "{{phase}}")], width=12))
        .with_panel(graph(
            "Time since the last checkpoint",
            "Seconds since the worker last reported a committed batch; grows while a "
            "migration is stalled (see the ChunkwiseMigrationStalled alert).", "s",
            [Query(f"time() - {Name.LAST_CHECKPOINT}{{{sel}}}")]))
        .with_row(dash.Row("Batches"))
        .with_panel(graph("Batch duration", "p50/p95/p99 of a batch's wall time: lock step, "
                          "work, checkpoint and commit.", "s",
                          quantiles(Name.BATCH_DURATION)))
        .with_panel(graph("Lock wait", "p50/p95/p99 of the time a batch waited for its row "
                          "locks (see the ChunkwiseLockWaitHigh alert).", "s",
                          quantiles(Name.LOCK_WAIT)))
        .with_panel(graph("Batch size", "Rows the tuner gives the next batch (it aims at "
                          "batch.targetDuration).", "none",
                          [Query(f"{Name.BATCH_SIZE}{{{sel}}}")]))
        .with_panel(graph("Batches by result", "committed: every row; isolated: failing rows "
                          "were split out, recorded and skipped.", "ops",
                          [Query(rate(Name.BATCHES, "result"), "{{result}}")]))
        .with_row(dash.Row("Retries, failures and throttling"))
        .with_panel(graph("Retries by reason", "Batch retries per second: lock timeouts, "
                          "deadlocks, statement timeouts, lost connections.", "ops",
                          [Query(rate(Name.RETRIES, "reason"), "{{reason}}")]))
        .with_panel(graph("Failed rows", "Rows per second recorded as failed and skipped "
                          "(see the ChunkwiseFailureRateHigh alert).", "suffix: rows/s",
                          [Query(rate(Name.FAILED_ROWS))]))
        .with_panel(graph("Throttled", "Share of time the workers waited instead of running "
                          "batches, by reason.", "percentunit",
                          [Query(rate(Name.THROTTLED, "reason"), "{{reason}}")]))
        .with_panel(graph("Rows processed and estimated", "From the status: the totals over "
                          "every run, kept after the worker pods are gone.", "short",
                          [Query(f"{Name.MIGRATION_ROWS_PROCESSED}{{{sel}}}",
                                 f"{BY_MIGRATION} processed"),
                           Query(f"{Name.MIGRATION_ROWS_ESTIMATED}{{{sel}}}",
                                 f"{BY_MIGRATION} estimated")]))
    )
    return board.build()


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {OUTPUT.relative_to(REPO)} differs from the build")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            sys.stderr.write(f"{OUTPUT.relative_to(REPO)} is stale: run scripts/dashboard.py\n")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
