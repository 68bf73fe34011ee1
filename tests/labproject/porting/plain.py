"""The plain RunPython forms of the porting migrations, as upstream projects write them:
what the ported ones are compared with, row by row."""

import json
from decimal import Decimal
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


def canonical_mac(text: str) -> str:
    """Shared by both forms of shape 3: upper case, colons, no surrounding blanks."""
    return text.strip().upper().replace("-", ":")


def populate_mac_addresses(apps: Any, schema_editor: Any) -> None:
    """Shape 3, plain, as NetBox's MACAddress migration writes it: a MACAddress per
    interface with a MAC, by bulk_create, then each interface pointed at its own, one
    UPDATE per interface. Upstream, AddField before it and RemoveField of mac_address
    after it are in the same migration."""
    alias = schema_editor.connection.alias
    interface = apps.get_model("porting", "Interface")
    mac_address = apps.get_model("porting", "MACAddress")
    macs = [mac_address(mac_address=canonical_mac(row.mac_address), interface_id=row.pk)
            for row in interface.objects.using(alias).filter(mac_address__isnull=False)]
    mac_address.objects.using(alias).bulk_create(macs, batch_size=100)
    for mac in macs:
        interface.objects.using(alias).filter(pk=mac.interface_id).update(
            primary_mac_address=mac)


def line_total(quantity: int, price: Decimal) -> Decimal:
    """Shared by both forms of shape 4."""
    return quantity * price


def total_line_items(apps: Any, schema_editor: Any) -> None:
    """Shape 4, plain: each line item with a product and no total, its product fetched
    for the price, then saved: two queries per item."""
    alias = schema_editor.connection.alias
    line_item = apps.get_model("porting", "LineItem")
    product = apps.get_model("porting", "Product")
    for row in line_item.objects.using(alias).filter(total__isnull=True,
                                                     product__isnull=False).iterator():
        price = product.objects.using(alias).get(pk=row.product_id).price
        row.total = line_total(row.quantity, price)
        row.save(update_fields=["total"])
