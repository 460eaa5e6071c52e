"""`pyramidal serve` is for this computer only: requests addressed to another name are refused (DNS rebinding),
a client that closes mid-upload costs one log line, and every error is the documented {"error": ...} JSON."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="pyramidal serve needs the web extra: pip install -e .[web]")
pytest.importorskip("multipart", reason="pyramidal serve needs the web extra: pip install -e .[web]")

from starlette.testclient import TestClient  # noqa: E402

from pyramidal.cli.serve import served_hosts  # noqa: E402
from pyramidal.web.app import create_app  # noqa: E402
from pyramidal.web.guard import host_name  # noqa: E402
from pyramidal.web.settings import ServeConfig  # noqa: E402


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client():
    with TestClient(create_app(ServeConfig(queue_size=2, hosts=served_hosts("192.168.1.20", []))),
                    base_url="http://127.0.0.1:7860") as c:
        yield c


@pytest.mark.parametrize("method, path", [("get", "/"), ("get", "/api/info"), ("post", "/api/restore"),
                                          ("post", "/api/sample"), ("get", "/api/jobs/abc"),
                                          ("get", "/api/jobs/abc/result.png")])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1.evil.example", "localhost.evil",
                                  "[::2]:7860", ""])
def test_a_request_for_another_host_is_refused(client, method, path, host):
    """A page of evil.example whose name resolves to 127.0.0.1 sends Host and Origin evil.example: refused, so it
    can neither queue a job nor read /api/info or a result."""
    headers = {"host": host, "origin": f"http://{host}"}
    kwargs = {"data": {"task": "noise"}, "files": {"image": ("a.png", png(), "image/png")}} if method == "post" else {}
    answer = getattr(client, method)(path, headers=headers, **kwargs)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "this server answers requests for" in answer.json()["error"]
    assert client.app.state.handlers.worker.queue.qsize() == 0  # nothing was queued


@pytest.mark.parametrize("host", ["localhost", "localhost:7860", "127.0.0.1", "127.0.0.1:7860", "[::1]:7860", "[::1]",
                                  "LOCALHOST:7860", "localhost.", "192.168.1.20:7860", "192.168.1.20"])
def test_this_computers_names_with_or_without_port_are_answered(client, host):
    assert client.get("/api/info", headers={"host": host}).status_code == 200
    answer = client.post("/api/restore", headers={"host": host, "origin": f"http://{host}"},
                         data={"task": "noise"}, files={"image": ("a.png", png(), "image/png")})
    assert answer.status_code == 202, answer.text


def test_host_names_are_parsed_as_trusted_host_checks_do():
    assert host_name("LocalHost:7860") == "localhost" and host_name("[::1]:7860") == "::1"
    assert host_name("::1") == "::1" and host_name("example.org.") == "example.org"
    assert served_hosts("127.0.0.1", []) == ("localhost", "127.0.0.1", "::1")
    assert "photos.lan" in served_hosts("127.0.0.1", ["photos.lan"])
    assert "0.0.0.0" not in served_hosts("0.0.0.0", [])  # a wildcard is no name a browser sends


@pytest.mark.parametrize("send, status, words", [
    (dict(json={"task": "noise"}), 415, "send the request as a form"),
    (dict(content=b"task=noise", headers={"content-type": "text/plain"}), 415, "'text/plain'"),
    (dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}), 400, "malformed upload"),
    (dict(content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}), 400, "no task"),
    (dict(data={"task": "nope"}), 400, "unknown task 'nope'"),
])
def test_bad_bodies_get_json_errors_naming_the_problem(client, send, status, words):
    answer = client.post("/api/restore", **send)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert words in answer.json()["error"] and "upload'" not in answer.json()["error"]


@pytest.mark.parametrize("method, path, status", [("get", "/nope", 404), ("get", "/api/restore", 405),
                                                  ("put", "/api/info", 405), ("delete", "/api/jobs/x", 405)])
def test_routing_errors_are_json_too(client, method, path, status):
    answer = getattr(client, method)(path)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json" and answer.json()["error"]


def test_a_client_closing_mid_upload_is_one_log_line(capfd):
    """A closed tab: the body stops, then the server hears of the disconnect. One line, no traceback."""
    app = create_app(ServeConfig())
    body = b"--b\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\nnoise\r\n--b\r\nContent-Disposition: " \
           b"form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n" + png()[:20]
    messages = [{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/restore", "raw_path": b"/api/restore",
             "root_path": "", "scheme": "http", "query_string": b"", "server": ("127.0.0.1", 7860),
             "client": ("127.0.0.1", 50000), "http_version": "1.1",
             "headers": [(b"host", b"127.0.0.1:7860"), (b"content-type", b"multipart/form-data; boundary=b"),
                         (b"content-length", b"100000")]}
    for _ in range(3):
        messages[:] = [{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}]
        asyncio.run(app(scope, receive, send))  # raises nothing
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 3 and all("closed the connection" in line for line in lines), err
    assert "Traceback" not in err and app.state.handlers.worker.queue.qsize() == 0
