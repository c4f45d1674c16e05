"""The report page renders in headless Chromium into a screenshot that is not blank and shows the plots.

Needs Debian's ``chromium`` package; skipped when it is not installed. The page is a local file with no
external assets, and Chromium runs with background networking off and every host name unresolvable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from tests.unit.test_report import make_run
from workers.report import write_report

WIDTH, HEIGHT = 1280, 2000


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return found


def screenshot(page: Path, shot: Path, profile: Path) -> np.ndarray:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert shot.exists(), (
        f"chromium exited {proc.returncode} without a screenshot:\n{proc.stderr.decode()[-2000:]}"
    )
    pixels = np.asarray(image.imread(shot))
    return np.rint(pixels[..., :3] * 255).astype(np.uint8)  # PNGs read as floats in [0, 1]


def test_report_page_screenshot_is_not_blank(tmp_path: Path) -> None:
    out = write_report(make_run(), tmp_path / "report")
    rgb = screenshot(out / "index.html", tmp_path / "shot.png", tmp_path / "profile")
    assert rgb.shape[:2] == (HEIGHT, WIDTH)
    flat = rgb.reshape(-1, 3)
    non_white = float(np.mean(np.any(flat < 245, axis=1)))
    colours = len(np.unique(flat, axis=0))
    assert non_white > 0.05, f"only {non_white:.1%} of the page is not white"
    assert colours > 200, f"only {colours} distinct colours: the page looks blank"
    # The plots' green (#2ca02c, recommendations) appears only inside the PNGs, so they were loaded.
    green = int(np.sum(np.all(np.abs(flat.astype(int) - (44, 160, 44)) < 30, axis=1)))
    assert green > 500, f"{green} green pixels: the plot images did not render"
