"""End to end in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
the page searches, the previews really render (decoded images, non-blank pixels on screen),
and neither a hostile query nor a hostile proposal title runs script."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.evaluate.web import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
                       reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, chromedriver)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(indexed_searcher):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(indexed_searcher), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the search server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    selenium = pytest.importorskip("selenium")
    del selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _search(browser, server_url: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server_url + "/")
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 20).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#summary, #error, #empty")))


def test_search_renders_preview_images(browser, server_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _search(browser, server_url, "globular cluster")
    images = browser.find_elements(By.CSS_SELECTOR, "figure.hit img")
    assert len(images) == 12
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('figure.hit img')).every(i => i.complete)"))
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.hit img')).map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "figcaption a.title")]
    assert any(t.startswith("Proposal ") for t in titles)

    # The screenshot shows the previews: the first image's box holds varied (noise) pixels.
    first = images[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    ratio = browser.execute_script("return window.devicePixelRatio") or 1
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                  "return [r.left, r.top, r.right, r.bottom]", first)
    box = tuple(int(v * ratio) for v in rect)
    pixels = np.asarray(shot.crop(box), dtype=np.float32)
    assert pixels.size > 1000 and pixels.std() > 20, (box, pixels.std())


def test_hostile_query_and_titles_do_not_execute(browser, server_url):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    payload = '"><img src=x onerror="document.title=\'pwned\'"><script>window.__pwned=3</script>'
    _search(browser, server_url, payload)
    assert browser.title == "HubbleCLIP search"
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.find_element(By.ID, "q").get_attribute("value") == payload
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    hostile = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "figcaption a.title")]
    assert any("<script>" in t for t in hostile)  # shown as text, not run


def test_traversal_and_unknown_previews_are_not_found(browser, server_url):
    from selenium.webdriver.common.by import By

    for path in ("/preview/..%2f..%2fetc%2fpasswd", "/preview/" + "0" * 64 + ".jpg"):
        browser.get(server_url + path)
        assert "root:" not in browser.page_source
        assert "not found" in browser.find_element(By.TAG_NAME, "body").text.lower()
