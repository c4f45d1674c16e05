"""End to end: the README's main job (`streamrec demo`) on the real stack, checked through its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.settings import ROOT, load_settings
from workers.stack import control

EVENTS = 3000


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = load_settings()
    started_here = not control.status(settings).all_up
    if started_here:
        control.up(settings)
    out_root = tmp_path_factory.mktemp("reports")
    try:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("streamrec")),
                "demo",
                "--events",
                str(EVENTS),
                "--max-rate",
                "600",
                "--keep",
                "--out-root",
                str(out_root),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        if started_here:
            control.down(settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last_line = proc.stdout.strip().splitlines()[-1]
    report_dir = Path(last_line)
    assert report_dir.parent == out_root and report_dir.name.startswith("demo-")
    return report_dir


def test_report_counts_match_what_was_replayed(demo_report: Path) -> None:
    report = json.loads((demo_report / "report.json").read_text())
    assert report["events"] == EVENTS
    assert report["queries"] == EVENTS // 10
    assert report["recommendations"] == report["queries"], "every query answered"
    assert report["duplicates"] == 0
    assert 0 <= report["fallbacks"] <= report["recommendations"]
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["dead_letters"] == 0
    assert len(report["top_items"]) == 10
    assert report["users"], "some users shown with their history"
    assert sum(report["models"].values()) == report["recommendations"]


def test_report_page_references_its_plots(demo_report: Path) -> None:
    html = (demo_report / "index.html").read_text()
    pngs = sorted(p.name for p in demo_report.glob("*.png"))
    assert len(pngs) >= 5
    for name in pngs:
        assert f"src='{name}'" in html
        assert (demo_report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
