"""`pyramidal serve` end to end in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Where Chromium or Playwright is missing the test skips with the reason; with PYRAMIDAL_REQUIRE_BROWSER=1 (set by
.ci/run) it fails instead. PYRAMIDAL_SERVE_SCREENSHOT=PATH also writes the page's screenshot there (the one in
docs/serve.md and the README comes from `PYRAMIDAL_SERVE_SCREENSHOT=docs/images/serve.png pytest -k browser`).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.damage import create_task, eval_seed
from pyramidal.evaluate import eval_images
from pyramidal.metrics import psnr

CHROMIUM = os.environ.get("PYRAMIDAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000


def _missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[dev])"
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "the web extra is not installed (pip install -e .[web])"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("PYRAMIDAL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PYRAMIDAL_REQUIRE_BROWSER=1 but the browser test cannot run: {reason}")
    pytest.skip(f"browser test: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path_factory):
    """A real `pyramidal serve` process on a free local port."""
    reason = _missing_browser()
    if reason:
        _skip_or_fail(reason)
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pyramidal", "serve", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pyramidal serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pyramidal serve did not answer within 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def page(server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "blob:", "data:"))
                    else None)
            page.goto(server)
            page.wait_for_selector("#task option[value=noise]", state="attached")
            # Keep every progress text the page shows, to check that progress over tiles was real.
            page.evaluate("""() => {
                window.progressTexts = [];
                const node = document.getElementById('progress-text');
                new MutationObserver(() => window.progressTexts.push(node.textContent))
                    .observe(node, {childList: true, characterData: true, subtree: true});
            }""")
            yield page
            assert outside == [], f"the page fetched from outside the server: {outside}"
        finally:
            browser.close()


def _photo(size: int) -> np.ndarray:
    items, _ = eval_images("builtin", "val", crop=size)
    return items[0][1].permute(1, 2, 0).numpy().copy()


def _save(rgb: np.ndarray, path: Path, **metadata) -> Path:
    Image.fromarray(rgb).save(path, **metadata)
    return path


def _camera_metadata() -> dict:
    """What a photographer's file carries: EXIF (camera, date), an ICC profile, a resolution."""
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x8769] = "Canon", "EOS R5", {0x9003: "2021:05:06 07:08:09"}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {"exif": exif, "icc_profile": icc, "dpi": (300, 300)}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _restore_and_download(page, path: Path) -> np.ndarray:
    page.click("#restore")
    page.wait_for_selector("#download", state="visible")
    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
    with page.expect_download() as download:
        page.click("#download")
    download.value.save_as(path)
    return _read(path)


def test_page_end_to_end(page, tmp_path):
    """One browser session, in order: restore an upload, a bad file, a painted mask, a sample with scores."""
    restore_an_upload(page, tmp_path)
    bad_file_shows_an_error(page, tmp_path)
    painted_mask_keeps_the_pixels_outside_it(page, tmp_path)
    sample_with_scores_and_screenshot(page, tmp_path)


def _set_tile(page, size: int) -> None:
    if not page.eval_on_selector("#controls details", "d => d.open"):
        page.click("#controls details summary")
    page.fill("#tile", str(size))


def restore_an_upload(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    clean = _photo(128)
    damaged = create_task("noise").apply(torch.from_numpy(clean).permute(2, 0, 1)[None], seeds=[eval_seed(0)])[0]
    damaged = damaged[0].permute(1, 2, 0).numpy().copy()
    page.select_option("#task", "noise")
    assert "Gaussian noise" in page.text_content("#task-desc")
    metadata = _camera_metadata()
    page.set_input_files("#file", str(_save(damaged, tmp_path / "damaged.png", **metadata)))
    expect(page.locator("#meta")).to_contain_text("128×128")
    _set_tile(page, 64)  # 3×3 tiles of 64 px, one per forward pass: nine to show progress over
    result = _restore_and_download(page, tmp_path / "restored.png")
    with Image.open(tmp_path / "restored.png") as downloaded:  # the photo's metadata is in the download
        exif = downloaded.getexif()
        assert (exif.get(0x010F), exif.get(0x0110)) == ("Canon", "EOS R5")
        assert exif.get_ifd(0x8769).get(0x9003) == "2021:05:06 07:08:09"
        assert downloaded.info.get("icc_profile") == metadata["icc_profile"]
        assert downloaded.info.get("dpi") == pytest.approx((300, 300), abs=0.01)
    assert result.shape == clean.shape
    assert psnr(clean, result) > psnr(clean, damaged) + 3, (psnr(clean, result), psnr(clean, damaged))
    texts = page.evaluate("window.progressTexts")
    assert any("of 9 tile batches" in t for t in texts), texts
    # The comparison slider: dragging the divider moves where the restored image starts.
    box = page.locator("#divider").bounding_box()
    page.mouse.move(box["x"] + 1, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] - 150, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert page.get_attribute("#divider", "aria-valuenow") != "50"
    page.click("#zoom-1")
    assert page.text_content("#zoom-label") == "100 %"


def bad_file_shows_an_error(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.select_option("#task", "noise")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#file", str(bad))
    expect(page.locator("#meta")).to_contain_text("cannot show")
    page.click("#restore")
    page.wait_for_selector("#error", state="visible")
    assert page.text_content("#error") == "notes.png: not an image file Pillow can read"


def painted_mask_keeps_the_pixels_outside_it(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    clean = _photo(128)
    page.select_option("#task", "block")
    page.set_input_files("#file", str(_save(clean, tmp_path / "photo.png")))
    expect(page.locator("#meta")).to_contain_text("128×128")
    page.check("input[name=maskmode][value=paint]")
    page.fill("#brush", "12")
    box = page.locator("#layer").bounding_box()
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=12)
    page.mouse.up()
    data_url = page.evaluate("document.getElementById('mask-canvas').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as img:
        mask = np.asarray(img.getchannel("A")) >= 128
    assert mask.shape == (128, 128) and 200 < mask.sum() < 128 * 128 // 4, mask.sum()
    result = _restore_and_download(page, tmp_path / "filled.png")
    np.testing.assert_array_equal(result[~mask], clean[~mask])
    assert (result[mask] != clean[mask]).any()


def sample_with_scores_and_screenshot(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.select_option("#task", "noise")
    _set_tile(page, 256)
    page.click("#sample")
    page.wait_for_selector("#scores-box", state="visible")
    rows = page.locator("#scores tbody tr")
    assert rows.count() == 3
    cells = [rows.nth(i).locator("td").all_text_contents() for i in range(3)]
    assert cells[0][0] == "damaged input"
    assert cells[1][0] == "best classical run: OpenCV non-local means (true σ)"  # BM3D is slow: not run here
    note = page.text_content("#scores-note")
    assert "BM3D" in note and ("--slow-baselines" in note or "not installed" in note), note
    assert cells[2][0].startswith("ours") and float(cells[2][1]) > float(cells[0][1]) + 5
    page.check("input[name=left][value=clean]")
    expect(page.locator("#img-before")).to_have_attribute("src", re.compile(r"/clean\.png$"))
    page.check("input[name=left][value=input]")
    expect(page.locator("#img-before")).to_have_attribute("src", re.compile(r"/input\.png$"))
    page.evaluate("() => document.getElementById('img-before').decode()")  # drawn before the screenshot
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot))
    assert Image.open(shot).size == (1280, 860)
    if os.environ.get("PYRAMIDAL_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["PYRAMIDAL_SERVE_SCREENSHOT"])
