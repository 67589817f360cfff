"""A real HTTP server on 127.0.0.1 standing in for Slack's incoming webhook, scripted per
request: answer a status (with headers and a body), or hang until released."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_PATH = "/services/T000/B000/s3cr3tT0k3n"


class FakeSlack:
    """Each POST takes the next step of ``script`` (then ``default``): ``(status, headers,
    body)`` or ``"hang"`` (wait for :meth:`release`, then answer 200). ``requests`` records
    path, headers, JSON body and the server's ``time.monotonic()`` at arrival; ``received``
    is set at each arrival."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list = []
        self.default: tuple | str = (200, {}, b"ok")
        self.received = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with fake._lock:
                    step = fake.script.pop(0) if fake.script else fake.default
                    fake.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body),
                            "t": time.monotonic(),
                        }
                    )
                fake.received.set()
                if step == "hang":
                    fake._release.wait(120)
                    step = (200, {}, b"ok")
                status, headers, reply = step
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the client gave up (timeout): nothing to answer
                    pass

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def release(self) -> None:
        """Let every hung request answer."""
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def closed_port_url() -> str:
    """A webhook URL on a 127.0.0.1 port nobody listens on (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{SECRET_PATH}"
