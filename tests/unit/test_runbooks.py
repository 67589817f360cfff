"""Every command a runbook shows exists (issue 12, "Runbooks").

Parses the fenced ``bash`` blocks of ``runbooks/*.md`` and checks each command line:

* the executable is one the project has (``dagster`` / ``.venv/bin/dagster``, ``python`` /
  ``.venv/bin/python``, ``make`` with a target of the Makefile, ``sqlite3`` (optional on the
  machine: its SQL is checked against the migrated schema), ``cat > FILE <<EOF`` writing a run
  config, ``export``); anything else fails;
* ``-m module`` imports (for ``python -m`` its sub-command is one its argparse declares);
  ``-j job``, sensor names, ``--select`` assets and ``--partition`` keys exist in
  ``cvn_assets.definitions.defs``; ``-w`` files exist;
* every run config (``-c FILE`` written by a heredoc of the same runbook, ``--config-json``)
  validates against the job's config schema (``dagster.validate_run_config``);
* Python (``-c CODE`` or a ``- <<'PY'`` heredoc) compiles and each ``from X import Y`` resolves;

and that every runbook path of ``sensors.jobs.RUNBOOKS`` exists with the required sections, that
the index lists every alert, and that job / sensor / asset names in the prose exist. A negative
self-check runs the same checker on a synthetic runbook naming things that do not exist.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, validate_run_config

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK_DIR = ROOT / "runbooks"
MAKEFILE = ROOT / "Makefile"

FENCE_RE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEREDOC_RE = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
DAGSTER_EXES = {"dagster", ".venv/bin/dagster"}
PYTHON_EXES = {"python", "python3", ".venv/bin/python"}
#: dagster CLI options that take a value (everything else after the sub-command is positional)
DAGSTER_VALUE_OPTS = {
    "-m", "--module-name", "-f", "--python-file", "-d", "--working-directory", "-w",
    "--workspace", "-l", "--location", "-r", "--repository", "-a", "--attribute",
    "--package-name", "-j", "--job", "-c", "--config", "--config-json", "--tags", "--run-id",
    "-o", "--op-selection", "--select", "--partition", "--partition-range", "--since",
    "--last_run_key", "--cursor", "--set", "--limit", "--grpc-host", "--grpc-port",
    "--grpc-socket", "--autoload-defs-module-name",
}  # fmt: skip
DAGSTER_COMMANDS = {
    ("job", "list"), ("job", "execute"), ("job", "launch"), ("job", "print"),
    ("sensor", "list"), ("sensor", "start"), ("sensor", "stop"), ("sensor", "preview"),
    ("sensor", "cursor"), ("asset", "materialize"), ("asset", "list"), ("run", "list"),
    ("dev",),
}  # fmt: skip
REQUIRED_SECTIONS = (
    "What fired",
    "Diagnosis",
    "Remediation",
    "Escalation",
    "Post-incident checklist",
)


# ----------------------------------------------------------------------------- parsing
@dataclass
class Command:
    argv: list[str]
    heredoc: str | None = None  # body fed on stdin / written by cat
    line: str = ""
    env: dict[str, str] = field(default_factory=dict)  # ``VAR=value`` prefixes (unexpanded)


def bash_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE_RE.findall(text) if lang == "bash"]


def commands(block: str) -> Iterator[Command]:
    """Logical command lines of a bash block: continuations joined, heredocs attached,
    ``VAR=value`` prefixes moved to :attr:`Command.env`, pipelines and ``&&`` lists split."""
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
        heredoc = None
        m = HEREDOC_RE.search(line)
        if m:
            body = []
            while i < len(lines) and lines[i].strip() != m.group(2):
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise AssertionError(f"unterminated heredoc {m.group(2)!r} after: {line}")
            i += 1  # the terminator
            heredoc = "\n".join(body) + "\n"
            line = line[: m.start()] + line[m.end() :]
        tokens = shlex.split(line, comments=True)
        part: list[str] = []
        for tok in [*tokens, "&&"]:
            if tok in ("|", "&&", "||", ";"):
                env: dict[str, str] = {}
                while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
                    name, _, value = part.pop(0).partition("=")
                    env[name] = value
                if part:
                    yield Command(part, heredoc, line.strip(), env)
                    heredoc = None
                part = []
            else:
                part.append(tok)


# ----------------------------------------------------------------------------- the checker
@dataclass
class Checker:
    defs: Any
    sql_db: Path | None
    makefile_targets: set[str]
    errors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # heredoc files of the current runbook
    checked: int = 0

    def fail(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    # --- names
    def job(self, name: str) -> Any:
        return {j.name: j for j in self.defs.resolve_all_job_defs()}.get(name)

    def sensor_names(self) -> set[str]:
        return {s.name for s in self.defs.sensors}

    def asset_keys(self) -> set[str]:
        return {k.to_user_string() for k in self.defs.resolve_all_asset_keys()}

    # --- a runbook
    def check_runbook(self, name: str, text: str) -> None:
        self.files = {}
        for block in bash_blocks(text):
            try:
                cmds = list(commands(block))
            except (ValueError, AssertionError) as exc:
                self.fail(name, f"unparsable bash block: {exc}")
                continue
            for cmd in cmds:
                self.checked += 1
                self.check_command(f"{name}: {cmd.line[:90]}", cmd)
        self.check_prose(name, text)

    def check_prose(self, where: str, text: str) -> None:
        jobs = {j.name for j in self.defs.resolve_all_job_defs()}
        for name in set(re.findall(r"`([a-z][a-z0-9_]*_job)`", text)):
            if name not in jobs:
                self.fail(where, f"names job {name!r}, not in cvn_assets.definitions.defs")
        arrow = r"\s*(?:->|→|>)\s*`?([a-z][a-z0-9_]*)"
        for name in re.findall(r"Automation" + arrow, text):
            if name not in self.sensor_names():
                self.fail(where, f"UI page Automation -> {name}: no such sensor")
        for name in re.findall(r"Assets" + arrow, text):
            if name not in self.asset_keys():
                self.fail(where, f"UI page Assets -> {name}: no such asset")
        for name in re.findall(r"Jobs" + arrow, text):
            if name not in jobs:
                self.fail(where, f"UI page Jobs -> {name}: no such job")

    def check_command(self, where: str, cmd: Command) -> None:
        exe, args = cmd.argv[0], cmd.argv[1:]
        if exe == "export":
            return
        if exe == "cat":
            if len(args) == 2 and args[0] == ">" and cmd.heredoc is not None:
                self.files[args[1]] = cmd.heredoc
            elif args[:1] == [">"] or cmd.heredoc is None:
                self.fail(where, "cat is only allowed as `cat > FILE <<'EOF'`")
            return
        if exe in DAGSTER_EXES:
            return self.check_dagster(where, args)
        if exe in PYTHON_EXES:
            return self.check_python(where, args, cmd.heredoc)
        if exe == "make":
            targets = [a for a in args if not a.startswith("-") and "=" not in a]
            for t in targets or ["<none>"]:
                if t not in self.makefile_targets:
                    self.fail(where, f"make target {t!r} not in the Makefile")
            return
        if exe == "sqlite3":
            return self.check_sql(where, args)
        self.fail(where, f"unknown executable {exe!r}")

    # --- dagster
    def check_dagster(self, where: str, args: list[str]) -> None:
        opts: dict[str, list[str]] = {}
        positional: list[str] = []
        it = iter(args)
        for a in it:
            if a.startswith("-"):
                key, eq, val = a.partition("=")
                if key in DAGSTER_VALUE_OPTS:
                    opts.setdefault(key, []).append(val if eq else next(it, ""))
                else:
                    opts.setdefault(key, []).append("")
            else:
                positional.append(a)
        group = tuple(positional[:1]) if positional[:1] == ["dev"] else tuple(positional[:2])
        if group not in DAGSTER_COMMANDS:
            self.fail(where, f"unknown dagster command {' '.join(group)!r}")
            return
        rest = positional[len(group) :]
        for mod in opts.get("-m", []) + opts.get("--module-name", []):
            if importlib.util.find_spec(mod) is None:
                self.fail(where, f"-m {mod}: module not importable")
            elif mod != "cvn_assets.definitions":
                self.fail(where, f"-m {mod}: the code location is cvn_assets.definitions")
        for wf in opts.get("-w", []) + opts.get("--workspace", []):
            if not (ROOT / wf).is_file():
                self.fail(where, f"-w {wf}: no such file")
        if group[0] == "sensor":
            if group[1] != "list" and len(rest) != 1:
                self.fail(where, f"dagster sensor {group[1]} needs one sensor name, got {rest}")
            for s in rest:
                if s not in self.sensor_names():
                    self.fail(where, f"no sensor {s!r} in cvn_assets.definitions.defs")
        job_def = None
        for j in opts.get("-j", []) + opts.get("--job", []):
            job_def = self.job(j)
            if job_def is None:
                self.fail(where, f"no job {j!r} in cvn_assets.definitions.defs")
        if group == ("job", "execute") or group == ("job", "launch"):
            if not (opts.get("-j") or opts.get("--job")):
                self.fail(where, "job execute/launch without -j")
        if group == ("asset", "materialize"):
            job_def = self.check_assets(where, opts)
        configs = []
        for f in opts.get("-c", []) + opts.get("--config", []):
            if f not in self.files:
                self.fail(where, f"-c {f}: no `cat > {f} <<'EOF'` earlier in this runbook")
                continue
            try:
                configs.append(yaml.safe_load(self.files[f]))
            except yaml.YAMLError as exc:
                self.fail(where, f"-c {f}: not YAML: {exc}")
        for js in opts.get("--config-json", []):
            try:
                configs.append(json.loads(js))
            except json.JSONDecodeError as exc:
                self.fail(where, f"--config-json: not JSON: {exc}")
        for cfg in configs:
            if job_def is None:
                self.fail(where, "a run config without a job to validate it against")
                continue
            try:
                validate_run_config(job_def, cfg)
            except Exception as exc:  # DagsterInvalidConfigError and friends
                self.fail(where, f"run config invalid for {job_def.name}: {exc}")

    def check_assets(self, where: str, opts: dict[str, list[str]]) -> Any:
        selected = [s for sel in opts.get("--select", []) for s in sel.split(",") if s]
        known = self.asset_keys()
        for s in selected:
            if s not in known:
                self.fail(where, f"--select {s}: no such asset")
        selected = [s for s in selected if s in known]
        if not selected:
            self.fail(where, "asset materialize without a valid --select")
            return None
        graph = self.defs.resolve_asset_graph()
        keys = [*opts.get("--partition", [])]
        for rng in opts.get("--partition-range", []):
            keys.extend(rng.split("..."))
        for s in selected:
            pdef = graph.get(AssetKey.from_user_string(s)).partitions_def
            for k in keys:
                if pdef is None or not pdef.has_partition_key(k):
                    self.fail(where, f"partition {k!r} is not a partition of {s}")
        glob = self.defs.resolve_implicit_global_asset_job_def()
        return glob.get_subset(asset_selection={AssetKey.from_user_string(s) for s in selected})

    # --- python
    def check_python(self, where: str, args: list[str], heredoc: str | None) -> None:
        if args[:1] == ["-m"] and len(args) >= 2:
            mod = args[1]
            spec = importlib.util.find_spec(mod)
            if spec is None or spec.origin is None:
                self.fail(where, f"python -m {mod}: module not importable")
                return
            source = Path(spec.origin).read_text(encoding="utf-8")
            if "__main__" not in source and not spec.submodule_search_locations:
                self.fail(where, f"python -m {mod}: no __main__ entry point")
            subcommands = re.findall(r"add_parser\(\s*\"([\w-]+)\"", source)
            rest = [a for a in args[2:] if not a.startswith("-")]
            if subcommands and (not rest or rest[0] not in subcommands):
                self.fail(where, f"python -m {mod}: sub-command {rest[:1]} not in {subcommands}")
            return
        if args[:1] == ["-c"] and len(args) >= 2:
            return self.check_code(where, args[1])
        if args[:1] == ["-"] and heredoc is not None:
            return self.check_code(where, heredoc)
        self.fail(where, f"python {' '.join(args[:2])}: only -m MODULE, -c CODE or - <<HEREDOC")

    def check_code(self, where: str, code: str) -> None:
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            self.fail(where, f"python code does not compile: {exc}")
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if importlib.util.find_spec(alias.name) is None:
                        self.fail(where, f"import {alias.name}: no such module")
            elif isinstance(node, ast.ImportFrom) and node.module:
                try:
                    mod = importlib.import_module(node.module)
                except ImportError as exc:
                    self.fail(where, f"from {node.module}: {exc}")
                    continue
                for alias in node.names:
                    is_package = hasattr(mod, "__path__")
                    if not hasattr(mod, alias.name) and not (
                        is_package and importlib.util.find_spec(f"{node.module}.{alias.name}")
                    ):
                        self.fail(where, f"from {node.module} import {alias.name}: no such name")

    # --- sqlite3
    def check_sql(self, where: str, args: list[str]) -> None:
        pos = [a for a in args if not a.startswith("-")]
        if len(pos) != 2:
            self.fail(where, f"sqlite3 expects DB and one SQL statement, got {pos}")
            return
        db, sql = pos
        if not db.endswith("$DAGSTER_HOME/cvn_results.sqlite"):
            self.fail(where, f"sqlite3 {db}: the results store is $DAGSTER_HOME/cvn_results.sqlite")
        if self.sql_db is None:
            return
        with sqlite3.connect(self.sql_db) as conn:
            try:
                conn.execute(f"EXPLAIN {sql}")
            except sqlite3.Error as exc:
                self.fail(where, f"SQL does not run against the migrated schema: {exc}")


# ----------------------------------------------------------------------------- fixtures
def _makefile_targets() -> set[str]:
    text = MAKEFILE.read_text(encoding="utf-8")
    return {
        t
        for line in text.splitlines()
        if (m := re.match(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*):(?!=)", line))
        for t in m.group(1).split()
        if not t.startswith(".") and "$" not in t
    }


@pytest.fixture(scope="module")
def defs():
    from cvn_assets.definitions import defs as d

    return d


@pytest.fixture(scope="module")
def sql_db(tmp_path_factory):
    from resources.results_store import ResultsStore

    path = tmp_path_factory.mktemp("runbook_sql") / "cvn_results.sqlite"
    ResultsStore(database_url=f"sqlite:///{path}").engine.dispose()  # migrated to the newest
    return path


@pytest.fixture(scope="module")
def checker(defs, sql_db):
    return Checker(defs, sql_db, _makefile_targets())


def _runbooks() -> list[Path]:
    return sorted(RUNBOOK_DIR.glob("*.md"))


# ----------------------------------------------------------------------------- tests
def test_every_alert_links_an_existing_runbook_with_its_sections():
    from sensors.jobs import RUNBOOKS

    for alert, rel in RUNBOOKS.items():
        path = ROOT / rel
        assert path.is_file(), f"alert {alert}: runbook {rel} does not exist"
        text = path.read_text(encoding="utf-8")
        headings = re.findall(r"^##\s+(.+?)\s*$", text, re.MULTILINE)
        for section in REQUIRED_SECTIONS:
            assert any(h.startswith(section) for h in headings), f"{rel}: no '## {section}'"
        remediation = text.split("## Remediation", 1)[1].split("\n## ", 1)[0]
        paths = re.findall(r"^###\s+Path\s+([A-Z])\b", remediation, re.MULTILINE)
        assert len(paths) >= 3, f"{rel}: {len(paths)} remediation paths, need 3 (### Path A/B/C)"
        checklist = text.split("## Post-incident checklist", 1)[1]
        assert checklist.count("- [ ]") >= 3, f"{rel}: the checklist needs `- [ ]` items"
        assert bash_blocks(text), f"{rel}: no bash block"


def test_index_lists_every_alert_with_its_runbook_and_a_real_sensor(defs):
    from sensors.jobs import RUNBOOKS

    index = (RUNBOOK_DIR / "README.md").read_text(encoding="utf-8")
    rows = [r for r in index.splitlines() if r.startswith("| `")]
    by_alert = {re.match(r"\| `(\w+)`", r).group(1): r for r in rows}
    sensors = {s.name for s in defs.sensors}
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    for alert, rel in RUNBOOKS.items():
        assert alert in by_alert, f"runbooks/README.md: alert {alert} missing from the index"
        assert Path(rel).name in by_alert[alert], f"index row of {alert} does not link {rel}"
    for alert, row in by_alert.items():
        cells = [c.strip() for c in row.strip("|").split("|")]
        named = re.findall(r"`(\w+)`", cells[2])
        for s in named:
            assert s in sensors | jobs, f"index row {alert}: no sensor (or job) {s!r}"
        status = re.search(r"\((RUNNING|STOPPED)\)", cells[2])
        if named and status:
            sensor = next(x for x in defs.sensors if x.name == named[0])
            assert sensor.default_status.value == status.group(1), f"index row {alert}: status"


@pytest.mark.parametrize("path", _runbooks(), ids=lambda p: p.name)
def test_every_runbook_command_exists(path, checker):
    checker.errors = []
    checker.checked = 0
    checker.check_runbook(path.name, path.read_text(encoding="utf-8"))
    assert not checker.errors, "\n".join(checker.errors)
    assert checker.checked > 0


#: the guard jobs an operator runs, and the operator command's action that runs each
OPS_ACTIONS = {
    "rollback_job": "rollback", "confirm_rollback_job": "confirm",
    "halt_trading_job": "halt", "resume_trading_job": "resume",
    "shadow_retrain_job": "retrain", "promote_candidate_job": "promote",
}  # fmt: skip


def test_runbooks_cover_the_guard_jobs(defs):
    from cvn_assets import ops

    text = "\n".join(p.read_text(encoding="utf-8") for p in _runbooks())
    for job, action in OPS_ACTIONS.items():
        shown = re.search(rf"-j {job}\b", text) or re.search(
            rf"-m cvn_assets\.ops (--json )?{action}\b", text
        )
        assert shown, f"no runbook shows how to run {job}"
        assert f"``{action}" in (ops.__doc__ or "") and job in (ops.__doc__ or ""), action


SYNTHETIC = """
## Diagnosis
See *Automation -> no_such_sensor* and `ghost_job`.

```bash
.venv/bin/dagster job execute -m cvn_assets.definitions -j no_such_job
.venv/bin/dagster sensor start -m cvn_assets.definitions no_such_sensor
cat > /tmp/bad.yaml <<'EOF'
ops:
  rollback:
    config:
      actor: "x"
      reason: "y"
      trigerr: manual
EOF
.venv/bin/dagster job execute -m cvn_assets.definitions -j rollback_job -c /tmp/bad.yaml
.venv/bin/dagster job launch -m cvn_assets.definitions -j halt_trading_job \\
    --config-json '{"ops": {"halt": {}}}'
.venv/bin/dagster asset materialize -m cvn_assets.definitions --select no_asset --partition X
.venv/bin/python -m cvn_assets.sweeps lst
.venv/bin/python -m no_such_module
.venv/bin/python -c "from resources.alerts import read_alertz"
make no_such_target
sqlite3 "$DAGSTER_HOME/cvn_results.sqlite" "SELECT nope FROM trades"
kubectl rollout undo deploy/x
```
"""


def test_checker_rejects_what_does_not_exist(defs, sql_db):
    c = Checker(defs, sql_db, _makefile_targets())
    c.check_runbook("synthetic.md", SYNTHETIC)
    text = "\n".join(c.errors)
    for expected in (
        "no job 'no_such_job'",
        "no sensor 'no_such_sensor'",
        "run config invalid for rollback_job",
        "run config invalid for halt_trading_job",
        "--select no_asset: no such asset",
        "asset materialize without a valid --select",
        "sub-command ['lst']",
        "python -m no_such_module: module not importable",
        "import read_alertz: no such name",
        "make target 'no_such_target'",
        "SQL does not run",
        "unknown executable 'kubectl'",
        "Automation -> no_such_sensor: no such sensor",
        "names job 'ghost_job'",
    ):
        assert expected in text, f"the checker missed: {expected}\n{text}"
    assert len(c.errors) == 14, text


def test_checker_accepts_a_valid_command(defs, sql_db):
    c = Checker(defs, sql_db, _makefile_targets())
    block = (
        "```bash\ncat > /tmp/ok.yaml <<'EOF'\nops:\n  confirm_rollback:\n    config:\n"
        '      actor: "a"\n      reason: "r"\nEOF\n'
        ".venv/bin/dagster job execute -m cvn_assets.definitions -j confirm_rollback_job "
        "-c /tmp/ok.yaml\nmake test\n```\n"
    )
    c.check_runbook("ok.md", block)
    assert c.errors == [] and c.checked == 3
