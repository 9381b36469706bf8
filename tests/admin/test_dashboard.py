"""The admin dashboard in a real browser (Debian's headless Chromium driven by Selenium) against a real cluster:
ZooKeeper, supervised agents, a node. The page signs its WebSocket URL with WebCrypto, shows the agents, and
follows a drain made from the command line as it happens; a wrong key is refused before any data is shown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.procs import TEST_USERS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0  # seconds any one thing the page should show may take
REFUSED = "connection refused: check the key (must be an administrator)"
ADMIN = TEST_USERS[0]  # alice, listed in admin_users below
NOT_ADMIN = TEST_USERS[1]  # bob: a good key, but no administrator


def artifacts_dir() -> Path:
    """Where screenshots go for a human to look at (git-ignored): $TRIO_SOS_TEST_ARTIFACTS or test-artifacts/."""
    path = Path(os.environ.get("TRIO_SOS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    driver.save_screenshot(str(tmp_path / name))
    kept = artifacts_dir() / name
    driver.save_screenshot(str(kept))
    return kept


@pytest.fixture
def browser(tmp_path: Path, monkeypatch) -> Iterator:
    """Headless Chromium, with a profile of its own, that never reaches the network by itself; quit whatever
    the test does."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing (Debian packages chromium and chromium-driver; "
                    "scripts/install-test-deps.sh installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager, should anything call it: no downloads
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1400",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver, *expected: str) -> list[str]:
    """The page's console errors (a CSP violation, an exception in app.js), those containing an ``expected``
    text aside."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
            and not any(text in entry["message"] for text in expected)]


def admin_settings(**settings) -> dict:
    """alice an administrator (bob not); the admin listener on a free port (conftest's TRIO_SOS_ADMIN_LISTEN)."""
    return {"admin_users": [ADMIN["id"]], **settings}


def open_dashboard(driver, node, user: dict, *, secret: str | None = None) -> None:
    assert node.admin_endpoint.startswith("http://127.0.0.1:"), node.admin_endpoint
    driver.get(node.admin_endpoint + "/")
    assert driver.find_element(By.ID, "connection").get_attribute("data-connection") == "disconnected"
    driver.find_element(By.ID, "access-key").send_keys(user["access_key"])
    driver.find_element(By.ID, "secret-key").send_keys(secret if secret is not None else user["secret_key"])
    region = driver.find_element(By.ID, "region")
    assert region.get_attribute("value") == "us-east-1"
    driver.find_element(By.ID, "connect").click()


def agent_states(driver) -> dict[str, str]:
    """agent id -> the text of its row's state cell (read in one script: rows may be re-rendered meanwhile)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#agents tr[data-agent-id]'), r => "
        "[r.dataset.agentId, r.querySelector('[data-field=\"state\"]').textContent])")
    return dict(rows)


def field(driver, selector: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                                 selector) or ""


def wait(driver, condition, what: str, timeout: float = WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(), message=what)


def admin_cli(node, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "trio_sos", "admin", "--endpoint", node.admin_endpoint, "--access-key",
         ADMIN["access_key"], "--secret-key", ADMIN["secret_key"], *args],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"admin {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def cluster(cluster_factory, node_factory, zookeeper, cluster_name):
    """Three supervised agents in two zones and one node of the cluster, alice its administrator; the
    fixtures stop them all."""
    agents = [cluster_factory(f"a{i}", zone=f"z{i % 2}") for i in range(3)]
    ids = [a.agent_id() for a in agents]
    # two replicas of three agents: writes go on while one is drained
    node = node_factory("node", zk=zookeeper.hosts, cluster=cluster_name, zk_session_timeout=2,
                        metadata="shared", replicas=2, **admin_settings())
    return node, ids


def test_dashboard_follows_a_drain_made_from_the_cli(browser, cluster, tmp_path: Path) -> None:
    node, ids = cluster
    open_dashboard(browser, node, ADMIN)
    wait(browser, lambda: field(browser, "#connection") == "connected"
         and browser.find_element(By.ID, "connection").get_attribute("data-connection") == "connected",
         "the page to connect")
    wait(browser, lambda: agent_states(browser) == dict.fromkeys(ids, "active"),
         f"every agent {ids} to show active")

    # the node and the four workers are on the page
    wait(browser, lambda: node.endpoint in field(browser, "#nodes tbody")
         and field(browser, '#nodes tbody [data-field="self"]') == "yes", "the node in the nodes table")
    for worker in ("gc", "repair", "scrub", "lifecycle"):
        wait(browser, lambda w=worker: field(browser, f'[data-worker="{w}"] [data-field="state"]')
             in ("running", "idle", "paused", "unknown"), f"the {worker} panel to show a state")

    # a drain from the command line shows at once, from its event (the page's own status refresh is 5 s)
    drained = ids[1]
    admin_cli(node, "drain", drained)
    expected = {**dict.fromkeys(ids, "active"), drained: "draining"}
    wait(browser, lambda: agent_states(browser) == expected, f"{drained} to show draining, the others active")

    # the worker buttons steer the worker: repair paused, then resumed
    repair = '[data-worker="repair"]'
    browser.find_element(By.CSS_SELECTOR, f'{repair} button[data-op="pause"]').click()
    wait(browser, lambda: field(browser, f'{repair} [data-field="state"]') == "paused", "repair to show paused")
    browser.find_element(By.CSS_SELECTOR, f'{repair} button[data-op="resume"]').click()
    wait(browser, lambda: field(browser, f'{repair} [data-field="state"]') in ("running", "idle"),
         "repair to resume")

    # S3 traffic shows in the traffic panel (stats every 2 s): keep some going until it does
    s3 = node.client()
    s3.create_bucket(Bucket="dashboard")
    sent = [0]

    def traffic_shown() -> bool:
        for _ in range(5):
            s3.put_object(Bucket="dashboard", Key=f"k{sent[0]}", Body=b"x" * 10_000)
            sent[0] += 1
        rate = browser.execute_script(
            "const e = document.querySelector('#traffic [data-field=\"requests_per_s\"]');"
            "return e ? e.dataset.value : null")
        return bool(rate) and float(rate) > 0

    wait(browser, traffic_shown, "a non-zero request rate in the traffic panel")
    assert agent_states(browser) == expected  # still
    assert browser.find_elements(By.CSS_SELECTOR, '#events li[data-event="agent.draining"]')
    assert REFUSED not in field(browser, "#error")
    shot = screenshot(browser, tmp_path, "dashboard.png")
    print(f"screenshot: {shot}")
    assert console_errors(browser) == []


def test_a_wrong_key_is_refused_and_shows_nothing(browser, node_factory, tmp_path: Path) -> None:
    node = node_factory("node", **admin_settings())
    # the upgrade is answered 401 (bad signature), then 403 (a good key, not an administrator's)
    for user, secret in ((ADMIN, ADMIN["secret_key"][:-1] + "X"), (NOT_ADMIN, None)):
        open_dashboard(browser, node, user, secret=secret)
        wait(browser, lambda: REFUSED in field(browser, "#error"), f"the refused-login message for {user['id']}")
        assert browser.find_element(By.ID, "connection").get_attribute("data-connection") == "disconnected"
        assert not browser.find_element(By.ID, "dashboard").is_displayed()
        assert browser.find_element(By.ID, "login").is_displayed()
        assert browser.find_elements(By.CSS_SELECTOR, "tr[data-agent-id], tr[data-node-id], #events li") == []
    screenshot(browser, tmp_path, "dashboard-refused.png")
    # the failed handshakes are the only errors the page logs
    assert console_errors(browser, "WebSocket connection to") == []
