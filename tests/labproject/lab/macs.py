"""A port's MAC address moved to a table of its own: batched with ``batch.insert_select``
(lab 0012) and ``batch.insert`` (lab 0013), and as a plain RunPython writes it, with
``bulk_create`` (the benchmark's baseline, bench/batch_context.py)."""

from typing import Any

from django.db.models import F
from django.db.models.functions import Upper


def copy_macs(apps: Any, schema_editor: Any, batch: Any) -> None:
    """lab 0012: one PortMac per port of the batch, computed by the database in one
    INSERT ... SELECT (no row through Python; ``added`` is set as create() sets it)."""
    port_mac = apps.get_model("lab", "PortMac")
    batch.insert_select(port_mac, port=F("pk"), address=Upper("mac_address"))


def link_macs(apps: Any, schema_editor: Any, batch: Any) -> None:
    """lab 0013: the same, and each port points at its new row (as NetBox's MACAddress
    migration does): the INSERT sets the new rows' ids, one UPDATE writes the ports."""
    port_mac = apps.get_model("lab", "PortMac")
    ports = list(batch.only("mac_address"))
    macs = [port_mac(port_id=port.pk, address=port.mac_address.upper()) for port in ports]
    batch.insert(port_mac, macs)
    for port, mac in zip(ports, macs, strict=True):
        port.primary_mac_id = mac.pk
    batch.write(ports, ["primary_mac"])


def copy_macs_plain(apps: Any, schema_editor: Any) -> None:
    """lab 0012's work as plain RunPython: bulk_create per 1,000 ports."""
    _plain(apps, link="")


def link_macs_plain(apps: Any, schema_editor: Any) -> None:
    """lab 0013's work as plain RunPython: bulk_create, then bulk_update, per 1,000."""
    _plain(apps, link="bulk_update")


def link_macs_as_netbox_does(apps: Any, schema_editor: Any) -> None:
    """lab 0013's work as NetBox's migration writes it: bulk_create, then an UPDATE of
    each port."""
    _plain(apps, link="update per row")


def _plain(apps: Any, link: str) -> None:
    port_model, port_mac = apps.get_model("lab", "Port"), apps.get_model("lab", "PortMac")
    ports = port_model.objects.filter(mac_address__isnull=False).only("mac_address")
    chunk: list[Any] = []
    for port in ports.order_by("pk").iterator(chunk_size=2000):
        chunk.append(port)
        if len(chunk) == 1000:
            _create(port_model, port_mac, chunk, link)
            chunk = []
    _create(port_model, port_mac, chunk, link)


def _create(port_model: Any, port_mac: Any, ports: list[Any], link: str) -> None:
    macs = port_mac.objects.bulk_create(
        [port_mac(port_id=port.pk, address=port.mac_address.upper()) for port in ports])
    if link == "bulk_update":
        for port, mac in zip(ports, macs, strict=True):
            port.primary_mac_id = mac.pk
        port_model.objects.bulk_update(ports, ["primary_mac"])
    elif link:
        for mac in macs:
            port_model.objects.filter(pk=mac.port_id).update(primary_mac=mac)
