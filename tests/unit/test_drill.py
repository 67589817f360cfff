"""The incident drill's own plumbing (the drill itself runs as `make drill`)."""

import pandas as pd


def test_the_drill_gives_every_sensor_the_resources_it_requires(tmp_path, monkeypatch):
    """The drill ticks the sensor functions itself: each sensor of the definitions must find
    every resource it requires (a new sensor once crashed the drill on a missing alert_sink)."""
    from cvn_assets.definitions import defs
    from cvn_assets.drill import sensor_resources
    from resources.config_store import ConfigStore
    from resources.model_registry import ModelRegistry

    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    given = set(sensor_resources(defs, ModelRegistry(), ConfigStore(), {})) | {"guard_clock"}
    sensors = defs.get_repository_def().sensor_defs
    assert {s.name for s in sensors} >= {"alert_delivery", "expectancy_negative_focal"}
    for s in sensors:
        assert s.required_resource_keys <= given, (s.name, s.required_resource_keys - given)


def test_the_drill_can_tick_every_sensor_it_ticks(tmp_path, monkeypatch):
    """Every sensor the drill ticks evaluates by hand on an empty home (the automation
    sensor cannot: once ticked, it crashed the drill with NotImplementedError)."""
    from dagster import DagsterInstance, build_sensor_context

    from cvn_assets.definitions import defs
    from cvn_assets.drill import sensor_resources, tickable_sensors
    from resources.config_store import ConfigStore
    from resources.guard_clock import GuardClock
    from resources.model_registry import ModelRegistry

    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    sensors = tickable_sensors(defs)
    every = {s.name for s in defs.get_repository_def().sensor_defs}
    assert every - set(sensors) == {"monitoring_follows_paper"}
    resources = {
        **sensor_resources(defs, ModelRegistry(), ConfigStore(), {}),
        "guard_clock": GuardClock(fixed_now="2026-01-05T10:00:00+00:00"),
    }
    with DagsterInstance.ephemeral() as instance:
        for name, sdef in sensors.items():
            ctx = build_sensor_context(
                instance=instance, resources=resources, sensor_name=name, definitions=defs
            )
            result = sdef.evaluate_tick(ctx)
            assert not result.run_requests, name  # nothing to do on an empty home


def test_the_loop_ticks_every_sensor_with_resources_built_once(tmp_path, monkeypatch):
    """The drill's loop builds the resources once and hands each sensor exactly those it
    requires (the built objects themselves, at every tick); two ticks on an empty home
    evaluate every sensor twice and launch nothing."""
    from dagster import DagsterInstance, build_resources

    from cvn_assets.definitions import defs
    from cvn_assets.drill import _SensorLoop, sensor_resources, tickable_sensors
    from cvn_assets.drill_profile import Phases
    from cvn_assets.drill_setup import Runner
    from resources.config_store import ConfigStore
    from resources.model_registry import ModelRegistry

    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    sensors = tickable_sensors(defs)
    given = sensor_resources(defs, ModelRegistry(), ConfigStore(), {})
    phases = Phases()
    with DagsterInstance.ephemeral() as instance, build_resources(given, instance=instance) as b:
        built = {key: getattr(b, key) for key in given}
        loop = _SensorLoop(Runner(defs, instance, {}), sensors, built, phases)
        for name, sdef in sensors.items():
            handed = loop.given[name]
            assert set(handed) == sdef.required_resource_keys - {"guard_clock"}, name
            for key, rdef in handed.items():
                assert rdef.resource_fn(None) is built[key], (name, key)
        for hour in ("2026-01-05T10:00:00+00:00", "2026-01-05T11:00:00+00:00"):
            loop.tick(pd.Timestamp(hour))
    assert phases.rows["sensor evaluations"].count == 2 * len(sensors)
    assert not loop.alerts and not loop.rollback_runs
    assert all(not keys for keys in loop.launched.values())


def test_the_drill_sensors_read_the_market_its_jobs_run_on():
    """``data_integrity`` recomputes the journaled features from the sensors' ``market_data``:
    it must be the scenario's market the drill's jobs run on, not the definitions' default
    (a crash drill once compared the crashed journal with the calm default market)."""
    from cvn_assets.definitions import defs
    from cvn_assets.drill import sensor_resources
    from cvn_assets.drill_setup import market_config
    from resources.config_store import ConfigStore
    from resources.model_registry import ModelRegistry

    turn = pd.Timestamp("2026-01-10", tz="UTC")
    cfg = market_config("crash", turn, 1.0)
    market = sensor_resources(defs, ModelRegistry(), ConfigStore(), cfg)["market_data"]
    scenario = market.scenario()
    assert scenario is not None and scenario.crash_pct == 0.25
    assert pd.Timestamp(scenario.edge_shift_at) == turn


def test_the_market_file_read_back_through_the_env_is_the_drill_market(monkeypatch):
    """The drill writes its market's settings into its home (``drill_market.json``): that JSON
    in ``$CVN_SYNTHETIC_MARKET`` must give the default resource the same candles as the
    drill's own (a runbook diagnosis on a drill home reads the drill's market, not the
    default one, whose every feature would read ``mismatch``)."""
    import json

    from cvn_assets.drill_setup import market_config
    from resources.market_data import MarketDataResource

    cfg = market_config("crash", pd.Timestamp("2026-01-19", tz="UTC"), 4.0)
    monkeypatch.setenv("CVN_SYNTHETIC_MARKET", json.dumps(cfg))
    from_env, drill = MarketDataResource(), MarketDataResource(**cfg)
    assert from_env.generator() == drill.generator()
    through = pd.Timestamp("2026-01-25", tz="UTC")
    a = from_env.load_candles_through("BTCUSDC", through)
    pd.testing.assert_frame_equal(a, drill.load_candles_through("BTCUSDC", through))
    monkeypatch.delenv("CVN_SYNTHETIC_MARKET")
    default = MarketDataResource().load_candles_through("BTCUSDC", through)
    assert not default["close"].equals(a["close"])  # edge 4.0 and the crash: other candles
