"""The real dagster-webserver against workspace.yaml: assets over GraphQL, a launched run."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, _free_port

pytestmark = pytest.mark.webserver

ASSETS_QUERY = """
{ assetNodes { assetKey { path } isPartitioned partitionKeysByDimension { name partitionKeys } } }
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""

RUN_LOGS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename } }
  }
}
"""

RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""


def _gql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def webserver(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    from resources.instance_storage import default_instance_yaml

    # the instance the one command creates (cached-engine event log), launching runs directly
    (home / "dagster.yaml").write_text(
        default_instance_yaml(str(home))
        + "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CVN_STORE_DIR": str(tmp_path / "store")}
    env.pop("CVN_DATABASE_URL", None)
    bin_dir = Path(sys.executable).parent
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [
            str(bin_dir / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((tmp_path / "webserver.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield port, home
    finally:
        # stop everything we started, by PID (process group)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    assert proc.poll() is not None


def test_assets_partitions_and_a_launched_materialization(webserver):
    from cvn_assets.partitions import SETTINGS

    port, home = webserver
    nodes = _gql(port, ASSETS_QUERY)["assetNodes"]
    by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    expected = {
        "candles",
        "features",
        "labels",
        "model_dataset",
        "fold_splits",
        "finetune_results",
        "gate_verdicts",
    }
    for v in SETTINGS.variants:
        expected |= {f"model_{v.name}", f"calibrated_{v.name}"}
    assert expected <= set(by_name), sorted(expected - set(by_name))
    n_cells = len(SETTINGS.universe) * SETTINGS.n_folds
    for v in SETTINGS.variants:
        dims = {
            d["name"]: d["partitionKeys"]
            for d in by_name[f"model_{v.name}"]["partitionKeysByDimension"]
        }
        assert len(dims["crypto"]) * len(dims["fold"]) == n_cells == 25
    assert by_name["finetune_results"]["isPartitioned"] is False

    params = {
        "selector": {
            "repositoryLocationName": "cvn_focal",
            "repositoryName": "__repository__",
            "jobName": "market_job",
            "assetSelection": [{"path": ["candles"]}],
        },
        "runConfigData": {"resources": {"market_data": {"config": {"hours": 2000}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "BTCUSDC"}]},
        "mode": "default",
    }
    launched = _gql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.time() + 180
    status = None
    while time.time() < deadline:
        status = _gql(port, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS"
    kinds = [
        e["__typename"] for e in _gql(port, RUN_LOGS, {"runId": run_id})["logsForRun"]["events"]
    ]
    assert "MaterializationEvent" in kinds and "RunSuccessEvent" in kinds, kinds

    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("candles")) == {"BTCUSDC"}
