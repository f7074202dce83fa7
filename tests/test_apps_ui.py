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
    painted = run_edit(pipe, editor, EditRequest("inpaint", "a hat"), args)
    assert painted[0].size == (16, 16)
    wide = run_edit(pipe, editor, EditRequest("outpaint", "a hat", margins=(8, 4, 0, 0)), args)
    assert wide[0].size == (28, 16)
    redrawn = run_edit(pipe, editor, EditRequest("img2img", "a hat", strength=0.5), args)
    assert redrawn.settings["strength"] == 0.5
    with pytest.raises(TLDError, match="mask is empty"):
        run_edit(pipe, {**editor, "layers": []}, EditRequest("inpaint", "a hat"), args)
    with pytest.raises(TLDError, match="upload an image"):
        run_edit(pipe, None, EditRequest("img2img", "a hat"), args)
