"""The plain RunPython forms of the porting migrations, as upstream projects write them:
what the ported ones are compared with, row by row."""

import json
from typing import Any

from django.db.models import OuterRef, Subquery


def normalise(prefs: str) -> str:
    """Shared by both forms: lower-case keys, "on"/"off" as booleans, a theme by default;
    a legacy value that is not a JSON object becomes {"legacy": <the text>}."""
    try:
        loaded = json.loads(prefs)
    except ValueError:
        loaded = {"legacy": prefs}
    if not isinstance(loaded, dict):
        loaded = {"legacy": loaded}
    switches = {"on": True, "off": False}
    values = {str(key).lower(): switches.get(value, value) if isinstance(value, str) else value
              for key, value in loaded.items()}
    values.setdefault("theme", "light")
    return json.dumps(values, sort_keys=True)


def normalise_prefs(apps: Any, schema_editor: Any) -> None:
    """Shape 1, plain: every profile loaded, changed and saved, one by one."""
    profile = apps.get_model("porting", "Profile")
    for row in profile.objects.using(schema_editor.connection.alias).iterator():
        row.prefs = normalise(row.prefs)
        row.save(update_fields=["prefs"])


def backfill_last_order(apps: Any, schema_editor: Any) -> None:
    """Shape 2, plain: each customer's latest order, customer by customer."""
    alias = schema_editor.connection.alias
    customer = apps.get_model("porting", "Customer")
    order = apps.get_model("porting", "Order")
    for row in customer.objects.using(alias).iterator():
        latest = order.objects.using(alias).filter(customer=row).order_by("-created").first()
        if latest is not None:
            row.last_order_at = latest.created
            row.save(update_fields=["last_order_at"])


def latest_order(apps: Any) -> Subquery:
    """The set-based form of the same lookup, for the ported migration."""
    order = apps.get_model("porting", "Order")
    return Subquery(order.objects.filter(customer=OuterRef("pk")).order_by("-created")
                    .values("created")[:1])
