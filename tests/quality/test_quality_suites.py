"""The suite files in expectations/: valid GX suites, in step with the code they guard."""

from __future__ import annotations

import json

import pytest

from tickcast.catalog.tables import table_defs
from tickcast.core.featureset import FEATURE_NAMES, KEY_COLUMNS
from tickcast.core.intervals import INTERVAL_NAMES
from tickcast.core.symbols import SYMBOL_PATTERN
from tickcast.quality.suites import SuiteError, expectation_name, load_suites, reason, suite_file

SUITE_TABLES = {"ticks": ["ticks"], "bars": ["bars_1m", "bars_1d"], "features": ["features"]}


def test_the_three_suites_exist_and_load_as_gx_suites() -> None:
    import great_expectations as gx

    suites = load_suites()
    assert sorted(suites) == ["bars", "features", "ticks"]
    for name, spec in suites.items():
        suite = gx.ExpectationSuite(**spec.document)
        assert suite.name == name
        # GX accepted every expectation (it drops invalid ones with a log line).
        assert len(suite.expectations) == len(spec.expectations)


@pytest.mark.parametrize("suite", sorted(SUITE_TABLES))
def test_every_column_a_suite_reads_exists_in_its_delta_tables(suite: str) -> None:
    spec = suite_file(suite)
    for table in SUITE_TABLES[suite]:
        missing = set(spec.columns) - set(table_defs()[table].column_names)
        assert not missing, f"{suite} reads {missing}, not columns of {table}"


@pytest.mark.parametrize("suite", sorted(SUITE_TABLES))
def test_every_suite_starts_with_the_schema_check(suite: str) -> None:
    first = suite_file(suite).expectations[0]
    assert first.type == "expect_table_columns_to_match_set"
    assert first.kwargs["exact_match"] is False


def test_features_suite_bounds_every_feature_exactly_once() -> None:
    spec = suite_file("features")
    schema = spec.expectations[0].kwargs["column_set"]
    assert schema == [*KEY_COLUMNS, *FEATURE_NAMES, "feature_set_version"]
    bounded = [
        e.kwargs["column"] for e in spec.expectations
        if e.type in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set")
        and e.kwargs["column"] in FEATURE_NAMES
    ]
    assert sorted(bounded) == sorted(FEATURE_NAMES)
    rsi = next(e for e in spec.expectations if e.kwargs.get("column") == "rsi_14")
    assert (rsi.kwargs["min_value"], rsi.kwargs["max_value"]) == (0, 100)
    interval = next(e for e in spec.expectations if e.kwargs.get("column") == "interval"
                    and e.type == "expect_column_values_to_be_in_set")
    assert sorted(interval.kwargs["value_set"]) == sorted(INTERVAL_NAMES)


def test_ticks_symbol_rule_is_the_platform_rule() -> None:
    regex = next(e for e in suite_file("ticks").expectations if e.type == "expect_column_values_to_match_regex")
    assert regex.kwargs["regex"] == SYMBOL_PATTERN


def test_time_bounds_are_a_parameter() -> None:
    for name in SUITE_TABLES:
        assert suite_file(name).parameters == frozenset({"ts_max"})


def test_expectation_names_and_reasons() -> None:
    assert expectation_name("expect_column_values_to_be_between", {"column": "price", "min_value": 0}) == (
        "expect_column_values_to_be_between(price)"
    )
    assert expectation_name(
        "expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "high", "column_B": "close"}
    ) == "expect_column_pair_values_a_to_be_greater_than_b(high,close)"
    assert expectation_name(
        "expect_compound_columns_to_be_unique", {"column_list": ["symbol", "window_start"]}
    ) == "expect_compound_columns_to_be_unique(symbol,window_start)"
    assert expectation_name("expect_table_columns_to_match_set", {"column_set": ["a"]}) == (
        "expect_table_columns_to_match_set"
    )
    assert reason("expect_column_values_to_be_between(price)") == (
        "expectation:expect_column_values_to_be_between(price)"
    )


def test_a_suite_whose_expectations_share_a_name_is_refused(tmp_path) -> None:
    twice = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}
    (tmp_path / "dup.json").write_text(json.dumps({"name": "dup", "expectations": [twice, twice]}))
    with pytest.raises(SuiteError, match="share a name: expect_column_values_to_not_be_null"):
        load_suites(tmp_path)


def test_an_unknown_suite_names_the_known_ones() -> None:
    with pytest.raises(SuiteError, match="have: bars, features, ticks"):
        suite_file("nope")
