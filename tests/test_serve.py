"""`pyramidal serve`: the JSON API through Starlette's test client, the model adapter, the command line."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="pyramidal serve needs the web extra: pip install -e .[web]")
pytest.importorskip("multipart", reason="pyramidal serve needs the web extra: pip install -e .[web]")

from starlette.testclient import TestClient  # noqa: E402

from pyramidal.damage import TASKS, create_task, eval_seed  # noqa: E402
from pyramidal.errors import PyramidalError  # noqa: E402
from pyramidal.evaluate import eval_images  # noqa: E402
from pyramidal.hub import available_builtin_weights  # noqa: E402
from pyramidal.inference.inputs import magenta_mask  # noqa: E402
from pyramidal.metrics import psnr  # noqa: E402
from pyramidal.options import RestoreOptions
from pyramidal.web import engine  # noqa: E402
from pyramidal.web.app import create_app  # noqa: E402
from pyramidal.web.settings import ServeConfig  # noqa: E402

LOCAL = "http://127.0.0.1:7860"  # the server answers only requests addressed to this computer


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def photo(size: int) -> np.ndarray:
    """A centre crop of a built-in validation photograph (never trained on)."""
    (_, image), *_ = eval_images("builtin", "val", crop=size)[0]
    return image.permute(1, 2, 0).numpy().copy()


def damage(task: str, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    out, mask = create_task(task).apply(torch.from_numpy(clean).permute(2, 0, 1)[None], seeds=[eval_seed(0)])
    return out[0].permute(1, 2, 0).numpy().copy(), None if mask is None else mask[0, 0].numpy()


def wait(client: TestClient, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "error"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def restore(client: TestClient, rgb: np.ndarray, task: str, **fields) -> dict:
    files = {"image": ("photo.png", png(rgb), "image/png")}
    if "mask" in fields:
        files["mask"] = ("mask.png", png(fields.pop("mask")), "image/png")
    response = client.post("/api/restore", data={"task": task, **fields}, files=files)
    assert response.status_code == 202, response.text
    return wait(client, response.json()["id"])


@pytest.fixture()
def client():
    with TestClient(create_app(ServeConfig(queue_size=2)), base_url=LOCAL) as c:
        yield c


def test_page_loads_nothing_from_outside(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        body = client.get(asset)
        assert body.status_code == 200
        assert "http://" not in body.text and "https://" not in body.text, asset
    assert "http://" not in page.text and "https://" not in page.text
    # Only the page's own files are served: nothing else of the file system, however it is named.
    for path in ("/static/engine.py", "/static/..%2Fengine.py", "/static/%2e%2e/app.py", "/etc/passwd",
                 "/api/jobs/x/../../etc/passwd"):
        assert client.get(path).status_code == 404, path


def test_cross_site_posts_are_refused(client):
    files = {"image": ("a.png", png(photo(64)), "image/png")}
    refused = client.post("/api/restore", data={"task": "noise"}, files=files,
                          headers={"origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.json() == {"error": "cross-site request refused"}
    same = client.post("/api/restore", data={"task": "noise"}, files=files, headers={"origin": LOCAL})
    assert same.status_code == 202
    assert wait(client, same.json()["id"])["state"] == "done"


def test_info_lists_the_registry_and_weights(client):
    info = client.get("/api/info").json()
    assert [t["name"] for t in info["tasks"]] == TASKS.names()
    have = set(available_builtin_weights())
    assert {t["name"] for t in info["tasks"] if t["builtin"]} == have
    hole = {t["name"] for t in info["tasks"] if t["hole"]}
    maskable = {t["name"] for t in info["tasks"] if t["maskable"]}
    assert {"squares", "block", "grid"} <= hole <= maskable
    assert "text" in maskable - hole  # a mask, but no magenta: the text model never saw magenta
    assert not {"noise", "blur", "jpeg", "pixelate", "gray"} & maskable
    assert all(t["description"] for t in info["tasks"])
    assert info["weights"][0]["id"] == "builtin"
    assert info["limits"]["max_pixels"] == 50_000_000


def test_restore_matches_the_library_and_reports_tile_progress(client, monkeypatch):
    clean = photo(128)
    damaged, _ = damage("noise", clean)
    seen = []
    original = engine.restore

    def spy(*args, **kwargs):
        progress = kwargs["progress"]
        kwargs["progress"] = lambda done, total: (seen.append((done, total)), progress(done, total))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "restore", spy)
    status = restore(client, damaged, "noise", tile="64")
    assert status["state"] == "done", status
    # 128 px in 64-px tiles overlapping by 32: 3×3 tiles, one per forward pass (restore's batch size, 1).
    assert status["total"] == 9 and status["done"] == 9
    assert seen == [(i, 9) for i in range(10)]
    result = decode(client.get(f"/api/jobs/{status['id']}/result.png").content)
    assert result.shape == clean.shape
    assert psnr(clean, result) > psnr(clean, damaged) + 3
    from pyramidal.inference import restore_image
    from pyramidal.inference.model import load_restorer

    expected = restore_image(load_restorer("builtin", "noise"), damaged, options=RestoreOptions(tile=64))
    np.testing.assert_array_equal(result, expected)  # the CLI's code path, pixel for pixel


def test_bad_file_is_a_clear_error_and_the_server_keeps_serving(client):
    for name, data in (("notes.txt", b"not an image at all"), ("empty.png", b""), ("cut.png", png(photo(64))[:200])):
        response = client.post("/api/restore", data={"task": "noise"}, files={"image": (name, data, "image/png")})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"].startswith(name), response.json()
    response = client.post("/api/restore", data={"task": "noise"})
    assert response.status_code == 400 and "no image" in response.json()["error"]
    assert client.get("/api/info").status_code == 200
    assert restore(client, photo(64), "noise")["state"] == "done"


def test_unknown_choices_are_refused(client):
    image = {"image": ("a.png", png(photo(64)), "image/png")}
    cases = [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"task": "noise", "weights": "/etc/passwd"}, "unknown weights"),
        ({"task": "gray"}, "no built-in weights for task 'gray'"),
        ({"task": "noise", "tile": "8"}, "tile 8"),
        ({"task": "noise", "mask_mode": "paint"}, "takes no mask"),
        ({"task": "block", "mask_mode": "paint"}, "needs the painted mask"),
        ({"task": "block", "mask_mode": "auto"}, "no magenta"),
    ]
    for fields, message in cases:
        response = client.post("/api/restore", data=fields, files=image)
        assert response.status_code == 400, (fields, response.text)
        assert message in response.json()["error"], (fields, response.json())


def test_too_large_images_and_requests_state_the_limit():
    config = ServeConfig(max_pixels=64 * 64, max_upload_bytes=200_000)
    with TestClient(create_app(config), base_url=LOCAL) as client:
        response = client.post("/api/restore", data={"task": "noise"},
                               files={"image": ("big.png", png(photo(96)), "image/png")})
        assert response.status_code == 413
        assert response.json()["error"] == "big.png: 96×96 px is 0.00922 MP; the limit is 0.004096 MP"
        noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)  # ~270 kB as PNG
        response = client.post("/api/restore", data={"task": "noise"},
                               files={"image": ("huge.png", png(noise), "image/png")})
        assert response.status_code == 413
        assert response.json()["error"] == "the upload is over the limit of 0.191 MB"
        assert restore(client, photo(64), "noise")["state"] == "done"


def test_wrong_size_mask_is_refused(client):
    response = client.post("/api/restore", data={"task": "block", "mask_mode": "paint"},
                           files={"image": ("a.png", png(photo(64)), "image/png"),
                                  "mask": ("mask.png", png(np.full((50, 40, 3), 255, np.uint8)), "image/png")})
    assert response.status_code == 400
    assert response.json()["error"] == "mask.png: the mask is 40×50 px but the image is 64×64 px"


def test_painted_mask_keeps_every_pixel_outside_it(client):
    clean = photo(64)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:34] = True
    painted = np.where(mask, 255, 0).astype(np.uint8)  # a grayscale mask: white = hole
    status = restore(client, clean, "block", mask_mode="paint", mask=painted)
    assert status["state"] == "done", status
    result = decode(client.get(f"/api/jobs/{status['id']}/result.png").content)
    np.testing.assert_array_equal(result[~mask], clean[~mask])
    assert (result[mask] != clean[mask]).any()  # the model filled the hole
    assert not (np.abs(result[mask].astype(int) - (255, 0, 255)).max(axis=1) < 48).any()  # no magenta left


def test_auto_mask_fills_the_magenta_holes_only(client):
    clean = photo(64)
    damaged, true_mask = damage("block", clean)
    status = restore(client, damaged, "block", mask_mode="auto")
    assert status["state"] == "done", status
    result = decode(client.get(f"/api/jobs/{status['id']}/result.png").content)
    np.testing.assert_array_equal(result[~true_mask], damaged[~true_mask])
    assert psnr(clean, result) > psnr(clean, damaged) + 5


def test_sample_shows_ground_truth_and_scores(client):
    response = client.post("/api/sample", data={"task": "block", "index": "1"})
    assert response.status_code == 202
    status = wait(client, response.json()["id"])
    assert status["state"] == "done", status
    assert status["files"] == ["clean", "input", "result"]
    assert status["sample"]["index"] == 1 and status["sample"]["count"] == 48
    clean, damaged, result = (decode(client.get(f"/api/jobs/{status['id']}/{n}.png").content)
                              for n in ("clean", "input", "result"))
    expected = engine.sample("block", 1)
    np.testing.assert_array_equal(clean, expected.clean)
    np.testing.assert_array_equal(damaged, expected.damaged)
    np.testing.assert_array_equal(result[~expected.mask], damaged[~expected.mask])
    rows = {r["kind"]: r for r in status["scores"]["rows"] if r["kind"] != "baseline"}
    baselines = [r for r in status["scores"]["rows"] if r["kind"] == "baseline"]
    from pyramidal.baselines import baselines_for

    assert [r["method"] for r in baselines] == [b.name for b in baselines_for("block")]
    assert baselines and all(r["psnr"] is not None for r in baselines)
    best = max(baselines, key=lambda r: r["psnr"])
    assert status["scores"]["best_classical"] == best["method"]
    assert rows["input"]["psnr"] == pytest.approx(psnr(clean, damaged))
    assert rows["model"]["psnr"] == pytest.approx(psnr(clean, result))
    assert rows["model"]["psnr"] > rows["input"]["psnr"] + 5


def test_full_queue_answers_busy_and_recovers(monkeypatch):
    gate = threading.Event()
    started = threading.Event()

    def held(rgb, *args, **kwargs):
        started.set()
        assert gate.wait(60)
        return rgb.copy()

    monkeypatch.setattr(engine, "restore", held)
    try:
        with TestClient(create_app(ServeConfig(queue_size=1)), base_url=LOCAL) as client:
            files = {"image": ("a.png", png(photo(64)), "image/png")}
            first = client.post("/api/restore", data={"task": "noise"}, files=files).json()
            assert started.wait(30)  # the worker holds the first job
            second = client.post("/api/restore", data={"task": "noise"}, files=files)
            assert second.status_code == 202 and second.json()["position"] == 1
            third = client.post("/api/restore", data={"task": "noise"}, files=files)
            assert third.status_code == 503
            assert third.json()["error"].startswith("busy") and "retry" in third.json()["error"]
            assert third.headers["retry-after"] == "2"
            sample = client.post("/api/sample", data={"task": "noise"})
            assert sample.status_code == 503
            gate.set()
            assert wait(client, first["id"])["state"] == "done"
            assert wait(client, second.json()["id"])["state"] == "done"
            again = client.post("/api/restore", data={"task": "noise"}, files=files)
            assert again.status_code == 202
            assert wait(client, again.json()["id"])["state"] == "done"
    finally:
        gate.set()


def test_a_failing_job_does_not_stop_the_worker(client, monkeypatch, capsys):
    original = engine.restore
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "restore", flaky)
    failed = restore(client, photo(64), "noise")
    assert failed["state"] == "error"
    assert failed["error"] == "internal error (RuntimeError: simulated failure)"
    assert "Traceback" in capsys.readouterr().err  # the server's log has the details
    assert restore(client, photo(64), "noise")["state"] == "done"


def test_trained_weights_are_offered_by_id_only(tmp_path):
    from pyramidal.checkpoint import save_weights
    from pyramidal.models import create_model

    torch.manual_seed(0)
    model = create_model("pyramidal23456")
    save_weights(model, tmp_path / "runs" / "mine.safetensors", metadata={"task": "gray"})
    choices = engine.weights_choices(folders=[tmp_path / "runs"])
    assert [c.id for c in choices] == ["builtin", "file1"]
    assert choices[1].label == "mine.safetensors (pyramidal23456, trained for gray)"
    with TestClient(create_app(ServeConfig(weights=choices)), base_url=LOCAL) as client:
        info = client.get("/api/info").json()
        assert info["weights"][1] == {"id": "file1", "label": choices[1].label, "task": "gray"}
        assert str(tmp_path) not in str(info)  # the browser never sees server paths
        status = restore(client, photo(64), "gray", weights="file1")
        assert status["state"] == "done" and status["warning"] is None
        status = restore(client, photo(64), "noise", weights="file1")
        assert status["warning"] == "these weights were trained for task 'gray', not 'noise'"
    with pytest.raises(PyramidalError, match="missing.safetensors: no such file"):
        engine.weights_choices([tmp_path / "missing.safetensors"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PyramidalError, match="no .safetensors files"):
        engine.weights_choices(folders=[tmp_path / "empty"])


def test_auto_mask_finds_exactly_the_painted_holes():
    for task in ("squares", "block", "grid"):
        damaged, true_mask = damage(task, photo(128))
        np.testing.assert_array_equal(magenta_mask(damaged), true_mask)


def test_strength_scales_the_models_change(client):
    assert client.get("/api/info").json()["strength"] == {"min": 0.0, "max": 2.0, "default": 1.0}
    damaged, _ = damage("noise", photo(64))
    kept = restore(client, damaged, "noise", strength="0")
    kept = decode(client.get(f"/api/jobs/{kept['id']}/result.png").content)
    np.testing.assert_array_equal(kept, damaged)  # strength 0: none of the model's change
    full, half = (decode(client.get(f"/api/jobs/{restore(client, damaged, 'noise', strength=s)['id']}/result.png")
                         .content).astype(int) for s in ("1", "0.5"))
    middle = (damaged.astype(int) + full) / 2
    assert np.abs(half - middle).max() <= 1  # halfway between the input and the full restoration
    refused = client.post("/api/restore", data={"task": "noise", "strength": "3"},
                          files={"image": ("a.png", png(damaged), "image/png")})
    assert refused.status_code == 400 and refused.json()["error"] == "strength=3.0: must be between 0 and 2 (1 = the model as trained)"


def test_serve_help_does_not_import_torch():
    code = ("import sys\nfrom pyramidal.cli import main\n"
            "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'starlette' not in sys.modules, 'heavy import'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--weights-dir" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing.safetensors"], "--weights missing.safetensors: no such file"),
    (["--weights-dir", "no-such-folder"], "--weights-dir no-such-folder: no such folder"),
    (["--port", "70000"], "--port 70000"),
    (["--tile", "16"], "--tile 16"),
    (["--queue", "0"], "--queue must be at least 1"),
])
def test_serve_bad_arguments_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    from pyramidal.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["serve", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyramidal serve: error: ") and message in lines[0], lines


def test_serve_taken_port_is_a_one_line_error(capsys):
    import socket

    from pyramidal.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pyramidal serve: error: --host 127.0.0.1 --port {port}: cannot listen there"), err


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_warns_when_not_local_only(host, warned, monkeypatch, capsys):
    import socket

    import uvicorn

    from pyramidal.cli import main

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw, app=app))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--host", host, "--port", str(port)]) == 0
    assert started["host"] == host and started["port"] == port
    err = capsys.readouterr().err
    assert ("warning: listening on 0.0.0.0" in err) is warned, err
