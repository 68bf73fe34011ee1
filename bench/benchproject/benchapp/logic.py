"""The one data change every contender makes: classify customers by last login."""

from datetime import UTC, datetime, timedelta

CUTOFF = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(days=365)
CASE_SQL = ("CASE WHEN last_login IS NULL OR last_login < %s THEN 'inactive' "
            "ELSE 'active' END")


def classify(last_login):
    return "inactive" if last_login is None or last_login < CUTOFF else "active"
