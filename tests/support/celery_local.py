"""A Celery cluster on this machine, for the live test and the benchmark (not for production).

Redis as a plain process on 127.0.0.1 and a free port (no persistence), stopped by PID, and
``dagster-celery`` workers started with the documented command; the same commands with other
hosts are in the README ("Beyond one machine").
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: the ``-A`` of the sweep's workers
WORKER_APP = "cvn_assets.execution.celery_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def start_redis(directory: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``redis-server`` on 127.0.0.1:port without persistence; returns (process, base URL)."""
    exe = redis_server_path()
    if exe is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        + ["--dir", str(directory)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"redis-server did not start: {(directory / 'redis.log').read_text()}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _dagster_celery() -> str:
    exe = Path(sys.executable).with_name("dagster-celery")
    return str(exe) if exe.exists() else "dagster-celery"


def _celery() -> str:
    exe = Path(sys.executable).with_name("celery")
    return str(exe) if exe.exists() else "celery"


def start_worker(
    name: str,
    config_yaml: Path,
    env: Mapping[str, str],
    log_path: Path,
    concurrency: int = 1,
) -> subprocess.Popen:
    """``dagster-celery worker start -A cvn_assets.execution.celery_worker -y <yaml> -n <name> -- -c
    <n>`` (the worker needs the launcher's definition-time environment; the app is dagster-celery's
    with the run check of :mod:`cvn_assets.execution.celery_worker`)."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    env = dict(env)  # dagster-celery runs `celery` from PATH: this interpreter's first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.Popen(
        [_dagster_celery(), "worker", "start", "-A", WORKER_APP, "-y", str(config_yaml)]
        + ["-n", name, "--", "-c", str(concurrency)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def children(pid: int) -> list[int]:
    """Direct child PIDs (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for c in children(todo.pop()):
            seen.append(c)
            todo.append(c)
    return seen


def wait_for_workers(
    broker: str, names: Sequence[str], timeout: float = 60, logs: Sequence[Path] = ()
) -> list[str]:
    """Block until every worker ``name@host`` answers ``celery inspect ping`` (on timeout, the
    error shows the end of the workers' ``logs``)."""
    want = {f"{n}@{socket.gethostname()}" for n in names}
    deadline = time.time() + timeout
    seen: set[str] = set()
    while time.time() < deadline:
        out = subprocess.run(
            [_celery(), "-A", "dagster_celery.app", "-b", broker, "inspect", "ping", "-t", "1"],
            capture_output=True,
            text=True,
        )
        seen = {w for w in want if w in out.stdout}
        if seen == want:
            return sorted(seen)
        time.sleep(0.5)
    tails = "".join(
        f"\n--- {p}:\n" + p.read_text(errors="replace")[-2000:] for p in logs if p.exists()
    )
    raise TimeoutError(f"workers {sorted(want - seen)} did not answer within {timeout}s{tails}")


def stop_worker(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the worker's celery process (the child of ``dagster-celery``): a warm
    shutdown; then the wrapper exits."""
    for pid in children(proc.pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_worker(proc)


def kill_worker(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the whole worker (wrapper, celery process, pool processes) at once, as a
    crashed host would; returns the PIDs killed."""
    pids = [proc.pid, *descendants(proc.pid)]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    return pids
