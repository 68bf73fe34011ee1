"""An order's total from its product's price: per-batch lookups (lab 0014, prepare=), a
join (lab 0015, annotate=), or the price already on the order (lab 0016, the plain
transform the other two are measured against in bench/batch_context.py)."""

from typing import Any


def prices(apps: Any, batch: Any) -> dict[Any, Any]:
    """prepare: the prices of the batch's products, in one query per batch (on the
    batch's database, as RunPython code uses schema_editor.connection.alias)."""
    product = apps.get_model("lab", "Product")
    return dict(product.objects.using(batch.db).filter(pk__in=batch.values("product_id"))
                .values_list("pk", "price"))


def total_from_prices(order: Any, prices: dict[Any, Any]) -> None:
    order.total = order.quantity * prices[order.product_id]


def total_from_price(order: Any) -> None:
    """annotate={"price": F("product__price")}: the row carries it."""
    order.total = order.quantity * order.price


def total_from_unit_price(order: Any) -> None:
    order.total = order.quantity * order.unit_price
