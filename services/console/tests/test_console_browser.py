"""The console in a real browser: Debian's headless Chromium, driven by Selenium over loopback, against the whole
test mesh (the `mesh` fixture starts the console with it). Screenshots of every page land in reports/console/
(MESH_CONSOLE_SCREENSHOTS overrides), to look at after the run."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from a2amesh.mqtt import make_client as mqtt_client
from a2amesh.topics import AgentAddress
from devstack.processes import REPO_ROOT
from devstack.stack import Stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 45.0
"""Seconds any one thing may take to show up (generous: the machine may be busy)."""

pytestmark = pytest.mark.timeout(300)


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll a check until it returns something truthy (bounded in time); DOM churn from a reload counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (StaleElementReferenceException, WebDriverException) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("MESH_CONSOLE_SCREENSHOTS", REPO_ROOT / "reports" / "console"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(mesh: Stack) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile; Selenium is given the browser and driver, so it downloads nothing."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).exists(), f"{binary} is missing: `make system-deps` installs chromium and chromium-driver"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never fetch a browser or a driver
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console(mesh: Stack, browser: WebDriver) -> WebDriver:
    """The browser, signed in to the console with the coordinator's key."""
    browser.get(mesh.console_url + "/agents")
    assert "/login" in browser.current_url, "the console must ask for a key first"
    browser.find_element(By.ID, "key").send_keys(mesh.api_key)
    browser.find_element(By.ID, "login-form").submit()
    eventually(lambda: browser.find_elements(By.ID, "agents"), "the Agents page after signing in")
    return browser


def coordinator_send(mesh: Stack, text: str, **metadata: Any) -> dict[str, Any]:
    """Start a task through the coordinator as any A2A client would (HTTP+JSON), without waiting for its end."""
    body = {
        "message": {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]},
        "metadata": metadata,
        "configuration": {"returnImmediately": True},
    }
    headers = {"Authorization": f"Bearer {mesh.api_key}", "A2A-Version": "1.0"}
    response = httpx.post(f"{mesh.coordinator_url}/message:send", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()["task"]


def state_of(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "task-state").text


def test_a_wrong_key_is_refused(mesh: Stack, browser: WebDriver, screenshots: Path) -> None:
    browser.get(mesh.console_url + "/login")
    browser.find_element(By.ID, "key").send_keys("not-the-key")
    browser.find_element(By.ID, "login-form").submit()
    error = eventually(lambda: browser.find_elements(By.ID, "login-error"), "the refusal")
    assert "refused" in error[0].text
    browser.save_screenshot(str(screenshots / "login-refused.png"))


def test_agents_page_lists_every_agent_online(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    console.get(mesh.console_url + "/agents")
    expected = {f"{mesh.org}/{mesh.unit}/{agent}" for agent in [*mesh.agents, "workflows"]}

    def online() -> set[str]:
        rows = console.find_elements(By.CSS_SELECTOR, "tr.agent")
        return {row.get_attribute("data-agent") for row in rows if row.get_attribute("data-status") == "online"}

    eventually(lambda: expected <= online(), f"every agent online ({sorted(expected)})")
    echo = console.find_element(By.CSS_SELECTOR, f'tr.agent[data-agent="{mesh.org}/{mesh.unit}/echo"]')
    link = echo.find_element(By.LINK_TEXT, "A2A endpoint").get_attribute("href")
    assert link == f"{mesh.coordinator_url}/agents/echo/"
    echo.find_element(By.CSS_SELECTOR, "details.skill summary").click()  # a skill opens on its examples
    assert "Examples" in echo.find_element(By.CSS_SELECTOR, "details.skill").text
    console.save_screenshot(str(screenshots / "agents.png"))


def test_a_task_sent_from_the_send_page_completes(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    injected = f"<script>window.pwned = '{marker}'</script><img src=x onerror=\"window.pwned='{marker}'\"> {marker}"
    console.get(mesh.console_url + "/send")
    Select(console.find_element(By.ID, "send-skill")).select_by_visible_text("echo")
    console.find_element(By.ID, "send-text").send_keys(injected)
    console.find_element(By.ID, "send-data").send_keys('{"rows": 3, "unit": "<b>bold</b>"}')
    console.find_element(By.ID, "send-button").click()

    def streamed_states() -> list[str]:
        return [item.get_attribute("data-state") for item in console.find_elements(By.CSS_SELECTOR, "li.event")]

    eventually(lambda: "TASK_STATE_COMPLETED" in streamed_states(), "the streamed COMPLETED event")
    assert "TASK_STATE_WORKING" in streamed_states(), streamed_states()
    console.save_screenshot(str(screenshots / "send.png"))

    console.find_element(By.ID, "send-task-link").click()
    eventually(lambda: state_of(console) == "completed", "the task page showing completed")
    timeline = [row.text for row in console.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")]
    assert [line.split()[0] for line in timeline][:1] == ["submitted"] and "completed" in timeline[-1], timeline
    artifacts = console.find_element(By.ID, "artifacts")
    assert injected in artifacts.text, "the echoed markup must be shown as text"
    assert "<b>bold</b>" in artifacts.text  # a data part is a table, its values text
    assert artifacts.find_elements(By.CSS_SELECTOR, "table.data"), "a data part is shown as a table"
    assert not artifacts.find_elements(By.TAG_NAME, "script") and not artifacts.find_elements(By.TAG_NAME, "img")
    assert console.execute_script("return window.pwned === undefined"), "the injected script ran"
    console.save_screenshot(str(screenshots / "task.png"))


def test_a_pipeline_shows_its_three_steps(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    task = coordinator_send(mesh, "what is mqtt", skill="workflow.pipeline", audience="engineers")
    console.get(f"{mesh.console_url}/tasks/{task['id']}")
    eventually(lambda: state_of(console) == "completed", "the pipeline completing")

    def steps() -> list[tuple[str, str]]:
        items = console.find_elements(By.CSS_SELECTOR, "#steps li.step")
        return [(item.find_element(By.TAG_NAME, "strong").text, item.get_attribute("data-state")) for item in items]

    assert steps() == [("research", "completed"), ("write", "completed"), ("review", "completed")]
    assert "report" in console.find_element(By.ID, "artifacts").text
    console.save_screenshot(str(screenshots / "workflow.png"))


def test_answering_the_reviewers_question(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    task = coordinator_send(mesh, "what is mqtt", skill="workflow.pipeline")  # no audience: the reviewer asks
    console.get(f"{mesh.console_url}/tasks/{task['id']}")
    eventually(lambda: state_of(console) == "input-required", "the reviewer's question")
    assert "audience" in console.find_element(By.ID, "question").text
    console.save_screenshot(str(screenshots / "input-required.png"))
    console.find_element(By.ID, "answer-text").send_keys("engineers")
    console.find_element(By.ID, "answer-button").click()
    eventually(lambda: state_of(console) == "completed", "the pipeline completing after the answer")
    assert console.find_element(By.ID, "notice").text == "answer sent"
    console.save_screenshot(str(screenshots / "answered.png"))


def test_cancelling_a_slow_task(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    task = coordinator_send(mesh, "take your time", skill="echo", delayMs=60_000)
    console.get(f"{mesh.console_url}/tasks/{task['id']}")
    eventually(lambda: console.find_elements(By.ID, "cancel-button"), "the cancel button")
    console.find_element(By.ID, "cancel-button").click()
    eventually(lambda: state_of(console) == "canceled", "the task canceled")
    assert not console.find_elements(By.ID, "cancel-button"), "a canceled task offers no cancel"
    console.save_screenshot(str(screenshots / "canceled.png"))


def test_tasks_list_filters_by_state(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    coordinator_send(mesh, "one more", skill="echo")
    console.get(mesh.console_url + "/tasks?state=TASK_STATE_COMPLETED")
    rows = eventually(lambda: console.find_elements(By.CSS_SELECTOR, "#tasks tr.task"), "completed tasks listed")
    assert {row.get_attribute("data-state") for row in rows} == {"completed"}
    console.save_screenshot(str(screenshots / "tasks.png"))
    console.get(mesh.console_url + "/tasks?state=TASK_STATE_CANCELED")
    rows = console.find_elements(By.CSS_SELECTOR, "#tasks tr.task")
    assert rows and {row.get_attribute("data-state") for row in rows} == {"canceled"}
    console.get(mesh.console_url + f"/tasks?agent={mesh.org}/{mesh.unit}/writer")
    agents = {row.find_elements(By.TAG_NAME, "td")[2].text for row in console.find_elements(By.CSS_SELECTOR, "tr.task")}
    assert agents == {f"{mesh.org}/{mesh.unit}/writer"}, "the pipelines' write steps, and only they"
    console.get(mesh.console_url + "/tasks?skill=review-report")
    agents = {row.find_elements(By.TAG_NAME, "td")[2].text for row in console.find_elements(By.CSS_SELECTOR, "tr.task")}
    assert agents == {f"{mesh.org}/{mesh.unit}/reviewer"}, "a skill keeps the tasks of the agents offering it"


def test_live_page_shows_events_as_they_happen(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    console.get(mesh.console_url + "/live")
    Select(console.find_element(By.ID, "live-agent")).select_by_visible_text(f"{mesh.org}/{mesh.unit}/echo")
    eventually(lambda: console.find_element(By.ID, "live-status").text == "live", "the live feed connected")
    task = coordinator_send(mesh, "live one", skill="echo")
    coordinator_send(mesh, "what is mqtt", skill="workflow.pipeline", audience="engineers")

    def events() -> list[tuple[str, str]]:
        rows = console.find_elements(By.CSS_SELECTOR, "#live-events tr.live-event")
        return [(row.get_attribute("data-agent"), row.text) for row in rows]

    eventually(lambda: any(task["id"][:8] in text for _, text in events()), "the echo task on the live feed")
    time.sleep(2)  # let the pipeline's events arrive too: none of them may pass the agent filter
    assert {agent for agent, _ in events()} == {f"{mesh.org}/{mesh.unit}/echo"}
    console.save_screenshot(str(screenshots / "live.png"))


async def publish_card(mesh: Stack, agent: str, card: dict[str, Any] | None) -> None:
    """Retain a card for `agent` on its discovery topic (None clears it), as the mesh's test identity."""
    payload = json.dumps(card).encode() if card is not None else b""
    async with mqtt_client(mesh.tester_settings(), f"console-test-{uuid.uuid4().hex[:6]}") as client:
        await client.publish(AgentAddress(mesh.org, mesh.unit, agent).discovery_topic, payload, qos=1, retain=True)


def test_a_card_carrying_markup_is_shown_as_text(mesh: Stack, console: WebDriver, screenshots: Path) -> None:
    """The Agents page picks the new agent up by itself (no reload), shows its marked-up card as text, and drops it
    when its card is cleared."""
    registry = httpx.get(f"{mesh.registry_url}/agents/{mesh.org}/{mesh.unit}/echo", timeout=10).json()
    card = copy.deepcopy(registry["card"])
    card["name"] = "<script>window.pwned = 'card'</script>Evil <b>Agent</b>"
    card["description"] = "<img src=x onerror=\"window.pwned = 'description'\">"
    card["skills"][0]["examples"] = ["<iframe src='javascript:window.pwned=1'></iframe>"]
    selector = f'tr.agent[data-agent="{mesh.org}/{mesh.unit}/evil-card"]'
    console.get(mesh.console_url + "/agents")
    asyncio.run(publish_card(mesh, "evil-card", card))
    try:
        eventually(lambda: console.find_elements(By.CSS_SELECTOR, selector), "the new agent, without a reload")

        def shown_as_text() -> bool:
            row = console.find_element(By.CSS_SELECTOR, selector)  # the page swaps its table every few seconds
            for details in row.find_elements(By.TAG_NAME, "details"):
                if not details.get_attribute("open"):
                    details.find_element(By.TAG_NAME, "summary").click()
            return all(text in row.text for text in (card["name"], card["description"], *card["skills"][0]["examples"]))

        eventually(shown_as_text, "the card's name, description and example as text")
        row = console.find_element(By.CSS_SELECTOR, selector)
        for tag in ("script", "img", "iframe", "b"):
            assert not row.find_elements(By.TAG_NAME, tag), f"a <{tag}> from the card became markup"
        assert console.execute_script("return window.pwned === undefined"), "markup from the card ran"
        console.save_screenshot(str(screenshots / "agents-markup-card.png"))
    finally:
        asyncio.run(publish_card(mesh, "evil-card", None))
    eventually(lambda: not console.find_elements(By.CSS_SELECTOR, selector), "the agent gone once its card is")
