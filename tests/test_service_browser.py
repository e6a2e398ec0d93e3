"""The web page in a real headless browser: Debian's Chromium driven by Playwright.

Needs `apt-get install chromium` and `pip install playwright` (the system browser is used; nothing
downloads one). Missing pieces fail the test with that message; set SQUAD_QA_SKIP_BROWSER=1 to
skip it explicitly on a machine without a browser.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("SQUAD_QA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# The emoji before the interesting part is deliberate: the API counts code points, JavaScript
# counts UTF-16 units, and a page that mixed them up would highlight one character off.
PASSAGE = ("🎉 Café Odeon — Zürich: opened in 1911 by Josef Schottenhaml, it served naïve poets, "
           "北京 visitors and émigrés until the 1930s.")
QUESTION = "Who opened Café Odeon?"


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if os.environ.get("SQUAD_QA_SKIP_BROWSER") == "1":
        pytest.skip("SQUAD_QA_SKIP_BROWSER=1")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (or set SQUAD_QA_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (no `playwright install` needed)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()


def test_page_answers_with_the_keyboard(live_server, browser_page):
    base_url, _ = live_server
    page = browser_page
    page.goto(base_url + "/")
    expected = httpx.post(base_url + "/v1/answer", json={"question": QUESTION, "context": PASSAGE}).json()["answers"][0]

    # Focus order: the passage is the first stop, the question the second, then the button.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "context"
    page.keyboard.insert_text(PASSAGE)  # typed as one input event: fast, same as pasting
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "question"
    page.keyboard.type(QUESTION)
    page.keyboard.press("Enter")

    mark = page.locator("#passage mark")
    mark.wait_for()
    assert mark.inner_text() == expected["text"] == PASSAGE[expected["start"] : expected["end"]]
    assert page.locator("#passage").inner_text() == PASSAGE  # the passage around the highlight is intact
    assert page.locator("#answer-text").inner_text() == expected["text"]
    assert page.locator("#answer-score").inner_text() == f"{expected['score']:.3f}"
    assert page.locator("#result").get_attribute("aria-live") == "polite"
    assert page.get_by_label("Passage").input_value() == PASSAGE  # labels are wired to the fields

    # Ctrl+Enter asks from the passage box (Enter there is a newline).
    question2 = "When did the émigrés leave?"
    expected2 = httpx.post(base_url + "/v1/answer", json={"question": question2, "context": PASSAGE}).json()["answers"][0]
    page.get_by_label("Question").fill(question2)
    page.get_by_label("Passage").focus()
    page.keyboard.press("Control+Enter")
    page.wait_for_function("t => document.getElementById('answer-text').textContent === t && "
                           "!document.getElementById('result').hasAttribute('aria-busy')", arg=expected2["text"])
    assert mark.inner_text() == PASSAGE[expected2["start"] : expected2["end"]]
    assert page.get_by_label("Passage").input_value() == PASSAGE  # no newline was typed into it


def test_page_reports_errors(live_server, browser_page):
    base_url, _ = live_server
    page = browser_page
    page.goto(base_url + "/")
    page.get_by_label("Question").fill("Anything?")
    page.get_by_label("Question").press("Enter")
    assert "paste a passage" in page.locator("#status").inner_text()
    assert page.evaluate("document.activeElement.id") == "context"  # focus goes where the fix is
    assert page.locator("#passage mark").count() == 0


def model_line(page) -> str:
    """The page's model line, once /v1/model has filled it in."""
    page.wait_for_function("() => document.getElementById('model-line').textContent.startsWith('Answering with')")
    return page.locator("#model-line").inner_text()


def test_page_names_the_model_and_answers_an_example(live_server, browser_page):
    base_url, _ = live_server
    page = browser_page
    page.goto(base_url + "/")
    info = httpx.get(base_url + "/v1/model").json()
    assert info["name"] in model_line(page)

    page.get_by_role("button", name="Marie Curie").click()
    mark = page.locator("#passage mark")
    mark.wait_for()
    passage = page.get_by_label("Passage").input_value()
    question = page.get_by_label("Question").input_value()
    assert passage.startswith("Marie Curie") and question.endswith("born?")
    expected = httpx.post(base_url + "/v1/answer", json={"question": question, "context": passage}).json()["answers"][0]
    assert mark.inner_text() == expected["text"] == passage[expected["start"] : expected["end"]]


def test_api_docs_render_offline(live_server, browser_page):
    """Swagger UI from the service's own files: the operations show up with no outside host reachable."""
    base_url, _ = live_server
    page = browser_page
    page.goto(base_url + "/docs")
    page.get_by_text("/v1/answer/batch").first.wait_for()
    assert page.get_by_text("/v1/answer", exact=True).count() >= 1


def test_page_says_what_a_distilled_model_was_distilled_from(live_server, browser_page):
    base_url, _ = live_server
    page = browser_page
    info = httpx.get(base_url + "/v1/model").json()  # the tiny model has no teacher: make /v1/model name one
    info.update(base="minilm", teacher="mpnet-squad", metrics={"exact_match": 75.2, "f1": 84.22, "num_questions": 10570})
    page.route("**/v1/model", lambda route: route.fulfill(json=info))
    try:
        page.goto(base_url + "/")
        assert model_line(page) == (
            f"Answering with {info['name']} (minilm, distilled from mpnet-squad): EM 75.2 / F1 84.2 on 10,570 SQuAD dev "
            "questions.")
        info["base"] = None  # no base encoder recorded: the teacher is still named
        page.reload()
        assert model_line(page).startswith(f"Answering with {info['name']} (distilled from mpnet-squad):")
    finally:
        page.unroute("**/v1/model")


def test_page_answers_over_several_passages(live_server, browser_page):
    base_url, _ = live_server
    page = browser_page
    page.goto(base_url + "/")
    parts = [PASSAGE, "The Broncos won the game in 2016 at Levi's Stadium in Santa Clara."]
    expected = httpx.post(base_url + "/v1/answer", json={"question": QUESTION, "contexts": [
        {"id": f"passage {i + 1}", "text": t} for i, t in enumerate(parts)]}).json()["answers"][0]
    page.get_by_label("Passage").fill(f"{parts[0]}\n---\n{parts[1]}\n")
    page.get_by_label("Question").fill(QUESTION)
    page.get_by_label("Question").press("Enter")
    page.locator("#passage mark").wait_for()
    assert f"in {expected['passage_id']} of 2" in page.locator("#status").inner_text()
    shown = parts[int(expected["passage_id"].split()[1]) - 1]
    assert page.locator("#passage").inner_text() == shown  # only the passage the answer is in
    assert page.locator("#passage mark").inner_text() == shown[expected["start"]:expected["end"]] == expected["text"]
