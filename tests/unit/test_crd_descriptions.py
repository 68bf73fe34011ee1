"""Every field of the DataMigration schema carries a description, so that
``kubectl explain datamigration.spec.batch`` (and the generated reference page,
docs/reference/datamigration.md) teaches what the field does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "datamigration.yaml"


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of the schema itself and every field below it: properties, list
    items (``[]``) and map values (``{}``)."""
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from fields(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from fields(schema["additionalProperties"], f"{path}{{}}")


def test_every_field_of_the_schema_has_a_description() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    found = list(fields(version["schema"]["openAPIV3Schema"], "datamigration"))
    # the API server refuses anything but the type on the root's metadata: kubectl
    # explain shows ObjectMeta's own documentation there
    undescribed = [path for path, schema in found if path != "datamigration.metadata"
                   and not str(schema.get("description") or "").strip()]
    assert not undescribed, "fields without a description in crds/datamigration.yaml:\n" + \
        "\n".join(undescribed)
    assert len(found) > 100  # the walk reached the template's and the status's fields


def test_the_walk_names_a_field_without_a_description() -> None:
    schema = {"description": "root", "properties": {"spec": {"description": "s", "properties": {
        "batch": {"properties": {"size": {"description": "rows"}}},
        "command": {"description": "c", "items": {"type": "string"}}}}}}
    assert [p for p, s in fields(schema, "dm") if "description" not in s] == [
        "dm.spec.batch", "dm.spec.command[]"]


def test_every_key_of_a_field_is_set() -> None:
    """A flow mapping with an unquoted comma (``{description: Of those, rows}``) parses
    as a stray key with no value, which the API server only warns about: none is left."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    stray = [f"{path}: {key}" for path, schema in fields(version["schema"]["openAPIV3Schema"],
                                                         "datamigration")
             for key, value in schema.items() if value is None]
    assert not stray, stray
