"""The web UI (`tld ui`) in a real browser: Debian's chromium driven by selenium over a tiny real model.

Opens the page, types a prompt, clicks Generate, waits for the gallery, saves a screenshot under the
test's tmp dir and checks that a real image appeared: non-trivial pixels on screen, and the PNG the
gallery serves carries the prompt and seed in its metadata.
"""

from __future__ import annotations

import io
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the ui extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is not installed")
from pipeline_fixtures import tiny_pipeline  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tld.apps.webui import UIConfig, launch_ui  # noqa: E402
from tld.pipeline.images import read_png_metadata  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# A missing browser is an install step that failed (.ci/run installs Debian's chromium), not a skip.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    assert CHROMIUM and CHROMEDRIVER, "apt-get install chromium chromium-driver (Debian)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def ui_url(tmp_path, tiny_vae_dir, tiny_clip_dir):
    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir)
    config = UIConfig(model_name="tiny", output_dir=str(tmp_path / "gallery"))
    port = free_port()
    demo = launch_ui(pipe, config, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}"
    demo.close()


def test_generate_in_the_browser(browser, ui_url, tmp_path: Path):
    browser.get(ui_url)
    wait = WebDriverWait(browser, 60)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
    prompt.send_keys("a red heart")
    wait.until(EC.element_to_be_clickable((By.ID, "generate"))).click()  # the page renders in parts
    img = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#gallery img")))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    seeds = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#seeds textarea").get_attribute("value"))
    browser.save_screenshot(str(tmp_path / "ui.png"))
    assert (tmp_path / "ui.png").stat().st_size > 0

    shown = np.asarray(Image.open(io.BytesIO(img.screenshot_as_png)).convert("RGB")).astype(float)
    assert shown.shape[0] >= 16 and shown.shape[1] >= 16 and shown.std() > 5  # not blank, not one colour

    served = urllib.request.urlopen(img.get_attribute("src"), timeout=30).read()
    (tmp_path / "served.png").write_bytes(served)
    meta = read_png_metadata(tmp_path / "served.png")
    assert meta["prompt"] == "a red heart" and meta["model"] == "tiny"
    assert seeds == f"seeds: {meta['seed']}"
    assert np.asarray(Image.open(tmp_path / "served.png")).shape == (16, 16, 3)


def test_edit_tab_calls(tiny_vae_dir, tiny_clip_dir):
    """The Edit tab's logic (gradio's ImageEditor value -> pipeline call) for each mode, no browser."""
    from pipeline_fixtures import checker_image

    from tld.apps.editing import EditRequest, run_edit
    from tld.errors import TLDError

    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir)
    image = checker_image(18)  # not a multiple of 4: the tab crops it to 16x16
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 9, 9))  # the painted stroke = the region to redraw
    editor = {"background": image, "layers": [layer], "composite": image}
    args = {"steps": 2, "seed": 0, "num_images": 1, "progress": False}
    painted = run_edit(pipe, editor, EditRequest(mode="inpaint", prompt="a hat"), args)
    assert painted[0].size == (16, 16)
    wide = run_edit(pipe, editor, EditRequest("outpaint", "a hat", margins=(8, 4, 0, 0)), args)
    assert wide[0].size == (28, 16)
    redrawn = run_edit(pipe, editor, EditRequest("img2img", "a hat", strength=0.5), args)
    assert redrawn.settings["strength"] == 0.5
    with pytest.raises(TLDError, match="mask is empty"):
        run_edit(pipe, {**editor, "layers": []}, EditRequest("inpaint", "a hat"), args)
    with pytest.raises(TLDError, match="upload an image"):
        run_edit(pipe, None, EditRequest("img2img", "a hat"), args)


def test_inpaint_mask_keeps_its_orientation(tiny_vae_dir, tiny_clip_dir):
    """A stroke painted over the top rows redraws the top rows: the painted layer becomes the mask
    the right way round (not transposed or flipped), and the rest keeps the input's pixels."""
    from pipeline_fixtures import checker_image

    from tld.apps.editing import EditRequest, painted_mask, run_edit

    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir)
    image = checker_image(16)
    layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    layer.paste((0, 255, 0, 255), (0, 0, 16, 4))  # the top 4 rows, full width
    mask = np.asarray(painted_mask([None, layer], (16, 16)))
    assert (mask[:4] == 255).all() and (mask[4:] == 0).all()
    editor = {"background": image, "layers": [layer], "composite": image}
    args = {"steps": 2, "seed": 0, "num_images": 1, "progress": False, "composite": True}
    out = np.asarray(run_edit(pipe, editor, EditRequest(mode="inpaint", prompt="sky"), args)[0])
    original = np.asarray(image)
    assert np.array_equal(out[8:], original[8:])  # far from the stroke: kept exactly
    assert not np.array_equal(out[:4], original[:4])  # under the stroke: redrawn


def test_handlers_take_the_widgets_by_name(tiny_vae_dir, tiny_clip_dir, tmp_path):
    """The buttons' handlers are called with keywords (gradio gets the inputs as a set), so no widget
    order has to match a parameter order; the gallery PNGs carry what was asked for."""
    from dataclasses import asdict

    from tld.apps.webui import Handlers, SamplingForm, build_ui

    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir)
    config = UIConfig(model_name="tiny", output_dir=str(tmp_path / "out"))
    handlers = Handlers(pipe, config)
    form = asdict(SamplingForm(cfg=2.5, steps=3, sampler="euler", seed=11, n=2, negative="blur"))
    items, seeds = handlers.text_to_image(prompt="a boat", width=24, height=16, **form)
    assert seeds == "seeds: 11, 12" and len(items) == 2
    meta = read_png_metadata(items[1][0])
    assert (meta["prompt"], meta["seed"], meta["steps"], meta["cfg"]) == ("a boat", 12, 3, 2.5)
    assert meta["sampler"] == "euler" and meta["negative_prompt"] == "blur" and meta["model"] == "tiny"
    assert Image.open(items[0][0]).size == (24, 16)
    demo = build_ui(pipe, config)
    clicks = [d for d in demo.config["dependencies"] if d.get("targets")]
    assert len(clicks) == 2 and all(len(d["inputs"]) >= 11 for d in clicks)


def test_share_needs_a_login(capsys, monkeypatch):
    from tld.apps.webui import parse_auth
    from tld.cli import main
    from tld.errors import TLDError

    monkeypatch.delenv("TLD_UI_AUTH", raising=False)
    assert main(["ui", "--share", "--model", "nowhere"]) == 1  # refused before loading anything
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--auth" in err, err
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss") and parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(TLDError, match="USER:PASSWORD"):
            parse_auth(bad)
    with pytest.raises(TLDError, match="--auth"):
        launch_ui(None, UIConfig(), share=True)  # type: ignore[arg-type]


def test_login_protects_the_page(tmp_path, tiny_vae_dir, tiny_clip_dir):
    import httpx

    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir)
    config = UIConfig(model_name="tiny", auth=("ann", "pw"))
    port = free_port()
    demo = launch_ui(pipe, config, host="127.0.0.1", port=port, block=False)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/config").status_code == 401
        with httpx.Client() as client:
            assert client.post(f"{url}/login", data={"username": "ann", "password": "no"}).status_code == 400
            assert client.post(f"{url}/login", data={"username": "ann", "password": "pw"}).status_code == 200
            assert client.get(f"{url}/config").status_code == 200
    finally:
        demo.close()
        config.cleanup()
    assert not Path(config.output_dir).exists()


def test_tld_ui_removes_its_output_folder_when_stopped(tmp_path, tiny_vae_dir, tiny_clip_dir):
    """`tld ui` stopped by SIGTERM (a service manager) deletes the tld-ui-* folder it made."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tiny_pipeline(tiny_vae_dir, tiny_clip_dir).save_pretrained(tmp_path / "model")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(scratch), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "tld", "ui", "--model", str(folder), "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.stdout else ""
            )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        assert [p.name[:7] for p in scratch.glob("tld-ui-*")] == ["tld-ui-"]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(scratch.glob("tld-ui-*"))  # before: the folder and its PNGs stayed
    assert code in (0, 130)  # 130: the CLI reports an interrupt
