"""The hand-written CRD against the one source of each contract: the API names in
:mod:`chunkwise.contract` and the tunables table in :mod:`chunkwise.engine`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chunkwise import contract
from chunkwise.engine import TUNABLES, SettingsError, Tunable

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "datamigration.yaml"
TUNED_GROUPS = ("batch", "timeouts", "retries", "haltOn", "throttle")
NONZERO_CLAUSE = "!self.matches('^0+"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def crd_field(crd: dict[str, Any], tunable: Tunable) -> dict[str, Any]:
    group, key = tunable.spec_path
    properties = spec_schema(crd)["properties"][group]["properties"]
    assert key in properties, f"the CRD has no spec.{tunable.spec} for --{tunable.option}"
    field: dict[str, Any] = properties[key]
    return field


def rules(field: dict[str, Any]) -> str:
    return " ".join(r["rule"] for r in field.get("x-kubernetes-validations", []))


def test_crd_names_are_the_contract_names() -> None:
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == contract.API_GROUP
    assert crd["metadata"]["name"] == f"{contract.PLURAL}.{contract.API_GROUP}"
    assert (names["kind"], names["plural"], names["singular"]) == (
        contract.KIND, contract.PLURAL, contract.SINGULAR)
    assert names["shortNames"] == [contract.SHORT_NAME]
    assert names["categories"] == [contract.CATEGORY]
    assert [v["name"] for v in crd["spec"]["versions"]] == [contract.API_VERSION]


def test_crd_tuned_fields_are_exactly_the_tunables() -> None:
    schema = spec_schema(load_crd())["properties"]
    in_crd = {f"{group}.{key}" for group in TUNED_GROUPS for key in schema[group]["properties"]}
    assert in_crd == {t.spec for t in TUNABLES}


@pytest.mark.parametrize("tunable", TUNABLES, ids=lambda t: t.spec)
def test_crd_default_equals_the_settings_default(tunable: Tunable) -> None:
    crd = load_crd()
    field = crd_field(crd, tunable)
    assert "default" in field, f"spec.{tunable.spec} has no default in the CRD"
    assert tunable.parse(str(field["default"]), tunable.spec) == tunable.default
    group_default = spec_schema(crd)["properties"][tunable.spec_path[0]].get("default", {})
    if tunable.spec_path[1] in group_default:  # a group default spelled out in full
        parsed = tunable.parse(str(group_default[tunable.spec_path[1]]), tunable.spec)
        assert parsed == tunable.default


@pytest.mark.parametrize("tunable", TUNABLES, ids=lambda t: t.spec)
def test_crd_bounds_equal_the_table(tunable: Tunable) -> None:
    field = crd_field(load_crd(), tunable)
    if tunable.kind == "integer":
        assert field["type"] == "integer"
        assert field.get("minimum") == tunable.minimum
        assert field.get("maximum") == tunable.maximum
        assert not tunable.exclusive_minimum
    elif tunable.kind == "duration":
        assert field["type"] == "string"
        assert "(ms|s|m|h)" in rules(field), "a duration needs the duration rule"
        assert (NONZERO_CLAUSE in rules(field)) == tunable.exclusive_minimum
        assert tunable.minimum == 0 and tunable.maximum is None
    elif tunable.kind in ("boolean", "text"):
        assert field["type"] == {"boolean": "boolean", "text": "string"}[tunable.kind]
        assert tunable.minimum is None and tunable.maximum is None
    else:  # fractions travel as strings ("0.005"): floats are not structural-schema safe
        assert tunable.kind == "fraction" and field["type"] == "string"
        assert (tunable.minimum, tunable.maximum) == (0, 1)
        pattern = re.search(r"self\.matches\('(.+?)'\)", rules(field))
        assert pattern is not None
        regex = pattern.group(1).replace("\\\\", "\\")
        assert re.match(regex, "0.5") and re.match(regex, "1") and not re.match(regex, "1.5")


@pytest.mark.parametrize("tunable", [t for t in TUNABLES if t.minimum is not None],
                         ids=lambda t: t.spec)
def test_engine_rejects_what_the_crd_rejects(tunable: Tunable) -> None:
    """The bounds the CRD states are the ones the engine enforces on flags and env too."""
    assert tunable.minimum is not None
    below = tunable.minimum if tunable.exclusive_minimum else tunable.minimum - 1
    with pytest.raises(SettingsError, match="^" + re.escape(tunable.spec) + ": expected"):
        tunable.check(below)
    tunable.check(tunable.default)


def test_resource_ref_parses_and_names_the_variable() -> None:
    assert contract.ResourceRef.parse("shop/customer-status") == contract.ResourceRef(
        "shop", "customer-status")
    assert contract.ResourceRef.parse("") is None
    with pytest.raises(ValueError, match="CHUNKWISE_RESOURCE: expected 'namespace/name'"):
        contract.ResourceRef.parse("customer-status")


def test_exit_codes_the_job_must_not_retry() -> None:
    assert {c for c in contract.ExitCode if not c.retryable} == {
        contract.ExitCode.DONE, contract.ExitCode.USAGE, contract.ExitCode.HALTED}


def test_the_settings_reference_lists_every_tunable() -> None:
    """docs/reference/generated/settings.md (written by scripts/docs-reference.py)."""
    table = (CRD_PATH.parents[1] / "docs" / "reference" / "generated" / "settings.md").read_text()
    flags = set(re.findall(r"`--([a-z-]+)`", table))
    assert flags == {t.option for t in TUNABLES}


def test_data_migration_names_are_stable_dns_labels_that_fit() -> None:
    from chunkwise.contract import data_migration_name

    assert data_migration_name("shop", "0002_customer_status") == "shop-0002-customer-status"
    assert data_migration_name("shop", "0005_two", 1) == "shop-0005-two-op1"
    long = data_migration_name("billing", "0042_" + "x_" * 60)
    assert len(long) <= 50 and not long.endswith("-")
    # one "-" per "_", as the example chart's `replace "_" "-"` does
    assert data_migration_name("My_App", "0001__odd") == "my-app-0001--odd"


def _object_rules(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any],
                                                                  dict[str, Any]]]:
    """(path, rule, the schema it sits on) of every CEL rule on an object: a rule there
    judges one of its fields, or several."""
    found = [(path, rule, schema) for rule in schema.get("x-kubernetes-validations", [])
             if schema.get("type") == "object"]
    for name, child in (schema.get("properties") or {}).items():
        found += _object_rules(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _object_rules(schema["items"], f"{path}[]")
    return found


def test_a_rule_above_the_field_it_judges_names_that_field() -> None:
    """Without fieldPath the API server says '<nil>: Invalid value: "object": ...' for a
    rule on an object; with it, 'spec.parallelism: Forbidden: ...'. Every rule on an
    object names an existing field of it, and a rule that refuses a change or a field
    that should not be there says Forbidden."""
    (version,) = load_crd()["spec"]["versions"]
    found = _object_rules(version["schema"]["openAPIV3Schema"], "")
    assert len(found) >= 6
    for path, rule, schema in found:
        field_path = rule.get("fieldPath")
        assert field_path, f"{path or '(root)'}: rule {rule['rule']!r} names no fieldPath"
        target = schema
        for name in field_path.lstrip(".").split("."):
            assert name in (target.get("properties") or {}), f"{path}: no {field_path}"
            target = target["properties"][name]
        if "oldSelf" in rule["rule"] or re.fullmatch(r"!has\(self\.\w+\)", rule["rule"]):
            assert rule.get("reason") == "FieldValueForbidden", (path, rule["rule"])


def test_the_operators_field_defaults_are_the_crds() -> None:
    """The operator tells a field a CRD upgrade defaulted from a change by these values."""
    from chunkwise.operator.jobs import FIELD_DEFAULTS

    properties = spec_schema(load_crd())["properties"]
    assert FIELD_DEFAULTS == {name: properties[name]["default"] for name in FIELD_DEFAULTS}
