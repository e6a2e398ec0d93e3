#!/usr/bin/env python
"""Screenshot the web page answering a question: the service on a free loopback port, headless Chromium.

    python scripts/screenshot.py [--model DIR] [-o docs/page.png]

Uses Debian's Chromium through Playwright (as tests/test_service_browser.py does; nothing downloads a
browser). The question is the first of SQuAD dev-v1.1 (Super Bowl 50), asked on its own paragraph.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/server.py: running_server

from playwright.sync_api import sync_playwright  # noqa: E402

from server import running_server  # noqa: E402

from service.app import create_app  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSAGE = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League "
    "(NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the "
    "National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl title. "
    "The game was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara, "
    "California. As this was the 50th Super Bowl, the league emphasized the \"golden anniversary\" with various "
    "gold-themed initiatives, as well as temporarily suspending the tradition of naming each Super Bowl game "
    "with Roman numerals (under which the game would have been known as \"Super Bowl L\"), so that the logo "
    "could prominently feature the Arabic numerals 50."
)
QUESTION = "Which NFL team represented the AFC at Super Bowl 50?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/page.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)

    with running_server(create_app(args.model)) as base_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_function("() => document.getElementById('model-line').textContent.startsWith('Answering')")
        page.get_by_label("Passage").fill(PASSAGE)
        page.get_by_label("Question").fill(QUESTION)
        page.get_by_label("Question").press("Enter")
        page.locator("#passage mark").wait_for()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=True)
        print(f"{args.output}: answer {page.locator('#answer-text').inner_text()!r}")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
