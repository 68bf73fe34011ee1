#!/usr/bin/env python3
"""Draw the dashboard's panels from a real run's Prometheus data, for the README and the docs.

    CHUNKWISE_DASHBOARD_DUMP=/tmp/dashboard.json .venv/bin/python -m pytest \\
        tests/e2e/test_metrics.py -k every_panel          # the e2e run saves its queries' data
    .venv/bin/python scripts/dashboard-picture.py /tmp/dashboard.json docs/dashboard.png

The dump holds every dashboard query (variables filled in) and what the e2e test's
Prometheus answered over the run, so the picture shows exactly what the panels show.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLUMNS = 3
UNITS = {"s": "seconds", "percentunit": "fraction", "ops": "per second", "none": "",
         "short": "rows", "suffix: rows/s": "rows/s"}


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def draw(dump: dict[str, Any], output: Path) -> None:
    panels: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for query in dump["queries"]:
        panels.setdefault(query["panel"], []).append(query)
    rows = -(-len(panels) // COLUMNS)
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(5.2 * COLUMNS, 2.9 * rows),
                                squeeze=False)
    start = float(dump["start"])
    for axis, (title, queries) in zip(axes.flat, panels.items(), strict=False):
        for query in queries:
            for series in query["result"]:
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                axis.plot(times, values, label=legend(query["legend"], series["metric"])
                          .replace(f"{dump['namespace']}/", ""), linewidth=1.4)
        axis.set_title(title, fontsize=10, loc="left")
        axis.set_ylabel(UNITS.get(queries[0]["unit"], queries[0]["unit"]), fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=6, loc="best")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the DataMigration was applied", fontsize=8)
    figure.suptitle(f"chunkwise dashboard, one e2e run ({dump['namespace']}/"
                    f"{dump['migration']}), from Prometheus", fontsize=11)
    figure.tight_layout()
    figure.savefig(output, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", type=Path, help="the JSON the e2e metrics test saved")
    parser.add_argument("output", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    draw(json.loads(args.dump.read_text()), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
