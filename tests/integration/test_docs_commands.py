"""Every command shown in a ``bash`` block of README.md and runbooks/*.md **runs** (issue 21):
against a drill-like home (:mod:`tests.support.ops_home`: the state after an automatic
rollback, a pending incident, a candidate, a stale crypto, a failed alert), one fresh home per
document, ``DAGSTER_HOME`` pointed at it, each command in the document's order, and each must
exit 0.

How a command is run (the line's words are expanded by ``bash`` itself, so quoting, ``$USER``
and ``"$DAGSTER_HOME"`` mean what they mean in a shell; ``VAR=value`` prefixes become the
command's environment):

* ``python -m cvn_assets.ops|sweeps ...``: its ``main(argv)`` in this process (the module's
  entry point as a real process is tested in ``test_ops_cli.py``); ``python -c CODE`` and
  ``python - <<'PY'``: the code, executed in this process as ``__main__``;
* ``dagster ...``: Dagster's click CLI in this process; ``-m cvn_assets.definitions`` is served
  by one code server started for the module (``dagster api grpc``, stopped by its pid), as the
  CLI would start one per command (5 s each);
* ``sqlite3``: the real binary (skipped when it is not installed); ``cat > FILE <<EOF``: the file
  is written (``/tmp/...`` under the test's directory); ``export``: the variable is set.

A command with a placeholder (``<INCIDENT_ID>``) runs twice: as written it must be refused
(exit status 2, one line, nothing written), then with the incident id of the home's P1.
:data:`ALLOWED` lists, with the reason, the commands not run here; an entry that matches nothing
fails the test (no stale exemptions).
"""

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dagster import DagsterInstance

from tests.support.ops_home import build_home
from tests.unit.test_runbooks import Command, bash_blocks, commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "runbooks").glob("*.md"))]


def _name(doc: Path) -> str:
    return str(doc.relative_to(ROOT)).replace("/", "_")


PLACEHOLDER = "<INCIDENT_ID>"

#: (pattern searched in a command's words, or in a whole block for "block:" entries; why not run)
ALLOWED: list[tuple[str, str]] = [
    (r"^make (sweep|test|paper)\b", "the sweep / this test suite / sweep + 90 days: minutes"),
    (r"dagster dev\b", "the UI and the daemon: a server running until stopped (test_webserver.py)"),
    (r"python -m cvn_assets\.sweep --sweep-id", "a second sweep: minutes"),
    (r"cvn_assets\.sweeps compare", "needs two swept sweeps with results (test_sweeps_compare.py)"),
    (r"asset materialize .*--select (model_|group:market|champion_models)",
     "market stage, training or a champion retrain on the market: minutes (test_sweep_e2e.py, "
     "test_champion_models.py)"),
    (r"cvn_assets\.ops retrain", "shadow_retrain_job trains a model on the whole history "
     "(its refusals run in test_ops_cli.py)"),
    (r"^export DAGSTER_HOME=", "the test's DAGSTER_HOME is the drill-like home"),
    (r"block:dagster-celery worker start", "Beyond one machine: hosts, a broker, workers "
     "(test_celery_e2e.py)"),
]  # fmt: skip


# ------------------------------------------------------------------------------ the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def code_server(tmp_path_factory):
    """``dagster api grpc -m cvn_assets.definitions`` on a free port; yields the CLI options
    that replace ``-m cvn_assets.definitions``; stopped by its pid."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    # the sensor preview evaluates in the server: give it a home (the stale runbook's)
    env["DAGSTER_HOME"] = str(
        tmp_path_factory.getbasetemp() / "docs" / "runbooks_runbook_guard_stale.md"
    )
    log = open(tmp_path_factory.mktemp("grpc") / "server.log", "w")  # noqa: SIM115
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen(
        [str(exe), "api", "grpc", "-m", "cvn_assets.definitions", "-h", "127.0.0.1",
         "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the code server exited"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the code server did not start"
            time.sleep(0.2)
        yield ["--grpc-host", "127.0.0.1", "--grpc-port", str(port)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ------------------------------------------------------------------------------ running
def _allowed(cmd: Command, block: str) -> str | None:
    for pattern, _why in ALLOWED:
        if pattern.startswith("block:"):
            if pattern[6:] in block:
                return pattern
        elif re.search(pattern, " ".join(cmd.argv)):  # the words, without VAR= prefixes
            return pattern
    return None


def _words(line: str, env: dict[str, str]) -> list[str]:
    """The line's words as bash expands them (quotes, variables), without running it."""
    out = subprocess.run(
        ["bash", "-c", f'printf "%s\\0" {line}'], env=env, capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().split("\0")[:-1]


def _exec_code(code: str) -> int:
    """The code as ``python -c`` would run it: 0, its SystemExit code, or 1 with the
    traceback printed for an exception."""
    try:
        exec(compile(code, "<doc>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _python(args: list[str], heredoc: str | None) -> int:
    if args[:1] == ["-m"]:
        from cvn_assets import ops, sweeps

        mains = {"cvn_assets.ops": ops.main, "cvn_assets.sweeps": sweeps.main}
        assert args[1] in mains, f"python -m {args[1]}: not a command this test knows"
        try:
            return int(mains[args[1]](args[2:]))
        except SystemExit as exc:
            return int(exc.code or 0)
        except Exception:  # an uncaught error ends a command with status 1, as python -m
            traceback.print_exc()
            return 1
    if args[:1] == ["-c"]:
        return _exec_code(args[1])
    assert args == ["-"] and heredoc is not None, args
    return _exec_code(heredoc)


class Runner:
    """Runs one document's commands in its home; ``failures`` collects what went wrong."""

    def __init__(self, grpc: list[str], tmp: Path, incident: str):
        self.grpc, self.tmp, self.incident = grpc, tmp, incident
        self.files: dict[str, str] = {}
        self.failures: list[str] = []
        self.ran = 0

    def run(self, words: list[str], cmd: Command) -> tuple[int, str]:
        """``(exit status, output)`` of the expanded command."""
        exe, args = os.path.basename(words[0]), words[1:]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if exe in ("python", "python3"):
                rc = _python(args, cmd.heredoc)
            elif exe == "dagster":
                rc = self.dagster(args)
            elif exe == "sqlite3":
                done = subprocess.run(words, capture_output=True, text=True, timeout=60)
                rc, _ = done.returncode, out.write(done.stdout + done.stderr)
            elif exe == "cat" and args[:1] == [">"] and cmd.heredoc is not None:
                path = self.tmp / Path(args[1]).name
                path.write_text(cmd.heredoc)
                self.files[args[1]] = str(path)
                rc = 0
            elif exe == "export":
                for assignment in args:
                    name, _, value = assignment.partition("=")
                    os.environ[name] = value
                rc = 0
            else:
                raise AssertionError(f"no way to run {exe!r}: add it to ALLOWED with the reason")
        return rc, out.getvalue() + err.getvalue()

    def dagster(self, args: list[str]) -> int:
        args = [self.files.get(a, a) for a in args]
        if "-m" in args:  # the module's code server (see the module docstring)
            i = args.index("-m")
            assert args[i + 1] == "cvn_assets.definitions"
            args = args[:i] + args[i + 2 :] + self.grpc
        res = CliRunner().invoke(_dagster_cli(), args, catch_exceptions=True)
        print(res.output)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            print(f"{type(res.exception).__name__}: {res.exception}")
        return res.exit_code

    def command(self, where: str, cmd: Command) -> None:
        redirects = [t for t in cmd.argv if t in ("<", ">", ">>", "<<", "|")]
        if cmd.argv[0] == "cat" and cmd.heredoc is not None:
            words = list(cmd.argv)  # `cat > FILE <<EOF`: written by run(), never by bash
        else:
            assert not redirects, f"{where}: {cmd.line}: redirections are not run here"
            words = _words(cmd.line, {**os.environ})
        assigned = {}
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            assigned[name] = value
        with pytest.MonkeyPatch.context() as mp:
            for name, value in assigned.items():
                mp.setenv(name, value)
            if any(PLACEHOLDER in w for w in words):
                before = _snapshot()
                rc, out = self.run(words, cmd)
                if rc != 2 or "placeholder" not in out or _snapshot() != before:
                    self.failures.append(f"{where}: as written, not refused: rc {rc}: {out}")
                words = [w.replace(PLACEHOLDER, self.incident) for w in words]
            rc, out = self.run(words, cmd)
        self.ran += 1
        if rc != 0:
            self.failures.append(f"{where}: rc {rc}: {cmd.line}\n{out[-2000:]}")


def _dagster_cli():
    from dagster._cli import cli

    return cli


def _snapshot() -> tuple:
    from resources.config_store import ConfigStore

    store = ConfigStore()
    with store.engine.connect() as conn:
        counts = tuple(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("config_audit", "rollbacks", "model_alias_history", "alerts")
        )
    return counts, len(DagsterInstance.get().get_runs())


# ------------------------------------------------------------------------------ the tests
USED: set[str] = set()


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_command_of_the_document_runs(doc, code_server, tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "docs" / _name(doc)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("USER", "docs-test")
    for var in ("CVN_DATABASE_URL", "CVN_ALERTS_PATH", "CVN_SLACK_WEBHOOK_URL", "CVN_GUARD_NOW"):
        monkeypatch.delenv(var, raising=False)
    truth = build_home(home)
    monkeypatch.setenv("CVN_GUARD_NOW", truth["now"].isoformat())
    monkeypatch.chdir(ROOT)
    runner = Runner(code_server, tmp_path_factory.mktemp("files"), truth["alerts"]["p1"])
    skipped = []
    environ = dict(os.environ)
    try:
        for k, block in enumerate(bash_blocks(doc.read_text(encoding="utf-8")), 1):
            for cmd in commands(block):
                allowed = _allowed(cmd, block)
                if allowed:
                    USED.add(allowed)
                    skipped.append(cmd.line)
                    continue
                if os.path.basename(cmd.argv[0]) == "sqlite3" and not shutil.which("sqlite3"):
                    continue
                runner.command(f"{_name(doc)} block {k}", cmd)
    finally:  # an `export` of a document stays in that document
        os.environ.clear()
        os.environ.update(environ)
    assert not runner.failures, "\n\n".join(runner.failures)
    assert runner.ran > 0


def test_every_exemption_is_used():
    """Runs after the documents (pytest keeps the file's order): an ALLOWED entry that no
    command matches is stale."""
    if not USED:
        pytest.skip("the document tests did not run in this session")
    unused = [p for p, _ in ALLOWED if p not in USED]
    assert not unused, f"ALLOWED entries that match no command: {unused}"
