"""Definition-time settings: errors name the environment variable and the value."""

import re

import pytest

from cvn_assets.settings import (
    DEFAULT_UNIVERSE,
    SettingsError,
    load_settings,
    parse_n_folds,
    parse_symbol_map,
    parse_universe,
    parse_variants,
)


def test_defaults():
    s = load_settings({})
    assert s.universe == DEFAULT_UNIVERSE and s.n_folds == 5
    assert s.fold_keys == ("f0", "f1", "f2", "f3", "f4")
    assert [v.loss_function for v in s.variants].count("binary:logistic") == 1
    assert len(s.variants) == 5


def test_custom_values_parse():
    assert parse_universe(" btcusdc, ETHUSDC ") == ("BTCUSDC", "ETHUSDC")
    assert parse_n_folds("3") == 3
    assert parse_symbol_map('{"BTCUSDC": "BTCUSDT"}') == {"BTCUSDC": "BTCUSDT"}
    vs = parse_variants(
        '[{"name": "baseline", "loss_function": "binary:logistic"},'
        ' {"name": "focal_g3_a01", "loss_function": "focal", "gamma": 3, "alpha": 0.1}]'
    )
    assert [v.name for v in vs] == ["baseline", "focal_g3_a01"]
    assert vs[1].gamma == 3 and vs[1].alpha == 0.1


@pytest.mark.parametrize(
    ("fn", "raw", "message"),
    [
        (parse_universe, "BTCUSDC,BTC-USD", r"CVN_UNIVERSE: symbol 'BTC-USD'"),
        (parse_universe, "BTCUSDC,BTCUSDC", "CVN_UNIVERSE: duplicate"),
        (parse_universe, "BTCUSDC", "at least 2 symbols"),
        (parse_n_folds, "five", "CVN_N_FOLDS: 'five' is not an integer"),
        (parse_n_folds, "2", r"CVN_N_FOLDS: 2 is outside \[3, 20\]"),
        (parse_symbol_map, "[1]", "CVN_SYMBOL_MAP: expected a JSON dict"),
        (parse_symbol_map, "{oops", "CVN_SYMBOL_MAP: not valid JSON"),
        (parse_variants, '{"name": "x"}', "CVN_VARIANTS: expected a JSON list"),
        (
            parse_variants,
            '[{"name": "baseline", "loss_function": "binary:logistic"},'
            ' {"name": "f", "loss_function": "focal", "gamma": 11, "alpha": 0.25}]',
            "CVN_VARIANTS: .*gamma.*11",
        ),
    ],
)
def test_bad_values_name_the_variable_and_value(fn, raw, message):
    with pytest.raises(SettingsError, match=message):
        fn(raw)


# --- run-environment variables the resources read at use (validated at load) ---------------


@pytest.mark.parametrize(
    ("env", "msg"),
    [
        ({"CVN_MARKET_SOURCE": "cvs"}, "CVN_MARKET_SOURCE: 'cvs' is not one of synthetic, csv"),
        ({"CVN_MARKET_SOURCE": "csv"}, "CVN_CSV_DIR: must name the folder"),
        ({"CVN_CSV_DIR": "/nonexistent/klines"}, "CVN_CSV_DIR: '/nonexistent/klines' is not a"),
        ({"CVN_SYMBOL_MAP": "{BTCUSDC: BTCUSDT}"}, "CVN_SYMBOL_MAP: not valid JSON"),
        ({"CVN_DATABASE_URL": "localhost:5432/db"}, "CVN_DATABASE_URL: 'localhost:5432/db' is"),
    ],
)
def test_environment_typos_fail_at_load_naming_the_variable(env, msg):

    with pytest.raises(SettingsError, match=re.escape(msg)):
        load_settings(env)


def test_store_dir_that_is_a_file_is_refused(tmp_path):

    f = tmp_path / "x"
    f.write_text("")
    with pytest.raises(SettingsError, match="CVN_STORE_DIR: .* is a file"):
        load_settings({"CVN_STORE_DIR": str(f)})
    assert load_settings({"CVN_STORE_DIR": str(tmp_path), "CVN_MARKET_SOURCE": "synthetic"})


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (
            '[{"name":"baseline","loss_function":"binary:logistic"},'
            '{"name":"focal_x","loss_function":"focal","gamma":20,"alpha":0.25}]',
            "variants[1] (focal_x).gamma=20 rejected: must be in [0, 10]",
        ),
        (
            '[{"loss_function":"focal","gamma":2,"alpha":0.25}]',
            "variants=['focal_g2_a025'] rejected: need exactly one binary:logistic baseline "
            "variant, found 0",
        ),
        (
            '[{"name":"baseline","loss_function":"binary:logistic"}]',
            "variants=['baseline'] rejected: need at least one focal variant",
        ),
    ],
)
def test_variant_errors_name_the_variant(raw, msg):
    with pytest.raises(SettingsError, match=re.escape(msg)):
        load_settings({"CVN_VARIANTS": raw})


def test_a_misspelled_variable_name_is_named_with_a_suggestion():
    with pytest.raises(
        SettingsError, match=r"CVN_N_FOLD: not a cvn-focal variable \(did you mean CVN_N_FOLDS\?\)"
    ):
        load_settings({"CVN_N_FOLD": "3"})
    with pytest.raises(SettingsError, match="CVN_MARKETSOURCE: .*did you mean CVN_MARKET_SOURCE"):
        load_settings({"CVN_MARKETSOURCE": "csv"})
