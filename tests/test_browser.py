"""JupyterLab in headless Chromium: the dashboard updates live, Stop stops training, the layer slider redraws.

Needs Debian's chromium at /usr/bin/chromium (``.ci/run`` installs it); driven with playwright's
Python API (never ``playwright install``). Screenshots go to ``$RMU_LENS_ARTIFACTS`` (default: the
test's tmp dir); their path is printed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.browser.lab import CHROMIUM, CHROMIUM_ARGS, jupyterlab
from tests.browser.notebook import write_notebook

pytestmark = pytest.mark.browser

NOTEBOOK = "browser_check.ipynb"
STEP = re.compile(r"(\d+)/(\d+)")


def artifacts_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("RMU_LENS_ARTIFACTS") or tmp_path / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class NotebookPage:
    """The open notebook in JupyterLab, driven through ``window.jupyterapp`` and the DOM."""

    def __init__(self, page) -> None:
        self.page = page

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        return self.cell(index).locator(".jp-InputPrompt").inner_text().strip()

    def running(self, index: int) -> bool:
        return "*" in self.prompt(index)

    def finished(self, index: int) -> bool:
        return re.search(r"\[\d+\]", self.prompt(index)) is not None

    def output_text(self, index: int) -> str:
        return self.cell(index).locator(".jp-OutputArea").inner_text()

    def kernel_idle(self) -> bool:
        return self.page.evaluate(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return !!k && k.status === 'idle'; }"
        )

    def run(self, index: int) -> None:
        # Fire and forget: the command's promise resolves only when the cell has finished.
        self.page.evaluate(
            "(i) => { const app = window.jupyterapp; const panel = app.shell.currentWidget;"
            " panel.content.activeCellIndex = i; void app.commands.execute('notebook:run-cell'); }",
            index,
        )

    def steps_shown(self, index: int) -> int | None:
        """Steps done according to the dashboard's statistics table in cell ``index``."""
        stats = self.cell(index).locator(".rmu-lens-dashboard table")
        if stats.count() == 0:
            return None
        match = STEP.search(stats.first.inner_text())
        return int(match.group(1)) if match else None

    def image_source(self, index: int) -> str:
        image = self.cell(index).locator(".jp-OutputArea img")
        return image.first.get_attribute("src") or "" if image.count() else ""


def test_dashboard_updates_live_stop_stops_and_the_layer_slider_redraws(tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    write_notebook(root / NOTEBOOK)
    artifacts = artifacts_dir(tmp_path)
    with jupyterlab(root, state) as lab, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(lab.notebook_url(NOTEBOOK), wait_until="domcontentloaded", timeout=120_000)
            notebook = NotebookPage(page)
            wait_for(lambda: page.locator(".jp-Notebook .jp-Cell").count() == 5, 120, "the notebook to open")
            wait_for(notebook.kernel_idle, 120, "the kernel to start")

            notebook.run(0)
            wait_for(lambda: notebook.finished(0), 180, "the set-up cell")
            assert "ready" in notebook.output_text(0), notebook.output_text(0)

            # 1. Training in the cell's thread: the dashboard moves while the prompt shows [*].
            notebook.run(1)
            seen_steps, seen_images = set(), set()

            def watch_running_cell():
                if notebook.finished(1):
                    return True
                if notebook.running(1):
                    steps = notebook.steps_shown(1)
                    if steps is not None:
                        seen_steps.add(steps)
                        seen_images.add(notebook.image_source(1))
                return False

            wait_for(watch_running_cell, 300, "the first training cell to finish", interval=0.1)
            assert len(seen_steps) >= 3, f"the dashboard did not update while the cell ran (steps seen: {sorted(seen_steps)})"
            assert len(seen_images - {""}) >= 2, "the dashboard's figure was not redrawn while the cell ran"
            assert notebook.steps_shown(1) == 150
            assert "finished" in notebook.output_text(1)

            # 2. Training in a background thread: the cell ends, the dashboard keeps moving, Stop stops it.
            notebook.run(2)
            wait_for(lambda: notebook.finished(2), 120, "the background training cell to return")
            early = wait_for(lambda: notebook.steps_shown(2), 120, "the background dashboard to show a step")
            first_figure = notebook.image_source(2)
            wait_for(lambda: (notebook.steps_shown(2) or 0) >= early + 5, 120, "background training to advance")
            wait_for(lambda: notebook.image_source(2) not in ("", first_figure), 60, "the background figure to redraw")
            notebook.cell(2).locator(".rmu-lens-dashboard").scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "dashboard_training.png"), full_page=True)
            notebook.cell(2).get_by_role("button", name="Stop").click()
            wait_for(lambda: "stopped" in notebook.output_text(2), 60, "the dashboard to report 'stopped'")
            stopped_at = notebook.steps_shown(2)
            time.sleep(2.0)
            assert notebook.steps_shown(2) == stopped_at, "training went on after Stop"
            assert "checkpoint kept" in notebook.output_text(2)

            notebook.run(3)
            wait_for(lambda: notebook.finished(3), 60, "the result cell")
            output = notebook.output_text(3)
            assert f"status: stopped steps: {stopped_at}" in output, output
            assert "'checkpoint'" in output and "'model'" in output, output

            # 3. The layer explorer: moving the slider redraws the figure and the table.
            notebook.run(4)
            wait_for(lambda: notebook.finished(4) and "layer 2" in notebook.output_text(4), 120, "the layer explorer")
            before = notebook.image_source(4)
            handle = notebook.cell(4).locator(".noUi-handle").first
            handle.focus()
            page.keyboard.press("ArrowLeft")
            wait_for(lambda: "layer 1 (blocks.1" in notebook.output_text(4), 30, "the table to follow the slider")
            wait_for(lambda: notebook.image_source(4) not in ("", before), 30, "the figure to be redrawn")
            notebook.cell(4).scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "layer_explorer.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(artifacts / "failure.png"), full_page=True)
            print(f"JupyterLab log: {lab.log}")
            raise
        finally:
            print(f"browser screenshots in {artifacts}")
            browser.close()
