"""The incident drill's own plumbing (the drill itself runs as `make drill`)."""


def test_the_drill_gives_every_sensor_the_resources_it_requires(tmp_path, monkeypatch):
    """The drill ticks the sensor functions itself: each sensor of the definitions must find
    every resource it requires (a new sensor once crashed the drill on a missing alert_sink)."""
    from cvn_assets.definitions import defs
    from cvn_assets.drill import sensor_resources
    from resources.config_store import ConfigStore
    from resources.model_registry import ModelRegistry

    monkeypatch.setenv("CVN_DATABASE_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    given = set(sensor_resources(defs, ModelRegistry(), ConfigStore())) | {"guard_clock"}
    sensors = defs.get_repository_def().sensor_defs
    assert {s.name for s in sensors} >= {"alert_delivery", "expectancy_negative_focal"}
    for s in sensors:
        assert s.required_resource_keys <= given, (s.name, s.required_resource_keys - given)
