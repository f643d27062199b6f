"""`cosface serve` as a real process on a loopback port, called over HTTP and driven by a headless browser.

The browser is the system's chromium with its chromedriver (Debian: chromium, chromium-driver),
driven by selenium; nothing is downloaded. Without them the browser test is skipped, saying why.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

KEY = "browser-test-key-1"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)),
                shutil.which("chromium"))
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                               else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "COSFACE_API_KEY": KEY, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cosface", "serve", "--model", str(tiny["model"]), "--db",
                             str(root / "g.sqlite"), "--port", str(port), "--device", "cpu", "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cosface serve did not come up: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.3)
    yield {"url": url, "root": root}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_real_server_over_http(server, tiny):
    url, photos = server["url"], next(iter(tiny["faces"].values()))
    h = httpx.get(url + "/healthz").json()
    assert h["status"] == "ok" and h["auth"] is True and h["gallery"] == {"subjects": 0, "faces": 0}
    files = {"image1": photos[0].read_bytes(), "image2": photos[0].read_bytes()}
    r = httpx.post(url + "/v1/verify", files=files, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(url + "/v1/verify", files=files, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 200 and r.json()["same"] and r.json()["similarity"] == pytest.approx(1.0, abs=1e-5)
    # a chunked upload (no Content-Length) is held to the same limit and still works under it
    body = json.dumps({"image": base64.b64encode(photos[0].read_bytes()).decode()}).encode()
    r = httpx.post(url + "/v1/detect", content=iter([body[:100], body[100:]]),
                   headers={"X-API-Key": KEY, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    r = httpx.post(url + "/v1/detect", content=iter([b"x" * (6 << 20)] * 2),
                   headers={"X-API-Key": KEY, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert "openapi" in httpx.get(url + "/openapi.json").json()
    assert httpx.get(url + "/docs").status_code == 200


def test_non_loopback_without_key_needs_insecure(tiny, capsys):
    from cosface.cli import main

    rc = main(["serve", "--model", str(tiny["model"]), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--insecure" in err and err.count("\n") == 1


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="needs the system chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
def test_web_page_in_headless_chromium(server, tiny, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=opts)
    faces = tiny["faces"]
    ada, bob = list(faces)[2:4]
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server["url"] + "/")
        key = driver.find_element(By.ID, "apikey")
        key.send_keys(KEY)
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)

        for name in (ada, bob):
            driver.find_element(By.ID, "enroll-name").send_keys(name)
            driver.find_element(By.ID, "enroll-photos").send_keys(str(faces[name][0]))
            driver.find_element(By.ID, "enroll-go").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "enroll-result"), f"enrolled {name}"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#subjects tr.subject")) == 2)

        driver.find_element(By.ID, "verify-a").send_keys(str(faces[ada][0]))
        driver.find_element(By.ID, "verify-b").send_keys(str(faces[ada][0]))
        driver.find_element(By.ID, "verify-go").click()
        verdict = wait.until(ec.presence_of_element_located((By.ID, "verify-verdict")))
        assert verdict.text == "same person"
        assert "similarity 1.0000" in driver.find_element(By.ID, "verify-similarity").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#verify-result img.face")) == 2

        driver.find_element(By.ID, "identify-photo").send_keys(str(faces[bob][0]))
        driver.find_element(By.ID, "identify-go").click()
        verdict = wait.until(ec.presence_of_element_located((By.ID, "identify-verdict")))
        assert verdict.text == bob
        names = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#identify-matches td.match-name")]
        assert names[0] == bob and set(names) == {ada, bob}
        wait.until(lambda d: all(img.get_attribute("naturalWidth") not in (None, "0")
                                 for img in d.find_elements(By.CSS_SELECTOR, "#identify-matches img.face")))

        # A gallery larger than a page (written by another process, as a bulk import would): the list grows a
        # page at a time with "more", and the search box lists only the names with its prefix.
        from cosface.gallery import GalleryStore

        store = GalleryStore(server["root"] / "g.sqlite", create=False)
        bulk = [f"person {i:03d}" for i in range(70)] + ["<i>tag"]
        store.add_many((name, _unit_rows(1, store.model.dim, i)) for i, name in enumerate(bulk))
        store.close()
        driver.refresh()
        key = wait.until(ec.presence_of_element_located((By.ID, "apikey")))
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)   # kept for the tab

        def names(d):   # read in one script: the rows are replaced while a search's answer arrives
            return d.execute_script("return Array.from(document.querySelectorAll('#subjects td.subject-name'), "
                                    "(td) => td.textContent)")

        # The page lists on load and again on the key's change event: "more" is enabled only once the latest
        # listing is on screen (an older answer arriving late must neither re-enable it nor replace the rows).
        more = driver.find_element(By.ID, "subjects-more")
        wait.until(lambda d: len(names(d)) == 50 and more.is_enabled())
        everyone = sorted([ada, bob] + bulk)
        assert names(driver) == everyone[:50]
        assert driver.find_element(By.ID, "subjects-count").text == "showing 50 of 73"
        assert more.is_displayed()
        more.click()
        wait.until(lambda d: len(names(d)) == 73)
        assert names(driver) == everyone and not more.is_displayed()

        search = driver.find_element(By.ID, "subjects-search")
        search.send_keys("person 06")
        wait.until(lambda d: names(d) == [f"person {i:03d}" for i in range(60, 70)])
        assert driver.find_element(By.ID, "subjects-count").text == "showing 10 of 10 starting with “person 06”"
        assert not more.is_displayed()
        driver.find_elements(By.CSS_SELECTOR, "#subjects tr.subject button")[0].click()   # remove "person 060"
        wait.until(lambda d: names(d) == [f"person {i:03d}" for i in range(61, 70)])
        assert driver.find_element(By.ID, "subjects-count").text == "showing 9 of 9 starting with “person 06”"
        search.clear()
        search.send_keys("<")   # names are text to the page, never markup
        wait.until(lambda d: names(d) == ["<i>tag"])
        assert not driver.find_elements(By.CSS_SELECTOR, "#subjects i")
        search.send_keys("b")
        wait.until(lambda d: d.find_element(By.ID, "subjects-count").text == "no names start with that")
        assert names(driver) == []

        shot = tmp_path / "web_page.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        keep = os.environ.get("COSFACE_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "web_page.png")
    finally:
        driver.quit()


def _unit_rows(n, dim, seed):
    import numpy as np

    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

