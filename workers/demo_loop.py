"""The demo's learning loop: simulated clicks, a retrain from the stream, a hot swap, an A/B readout.

Phase 1 replays the first half of the stream with both arms on ranker version 1 (an A/A test: any
difference is noise) while the click simulator answers recommendations. Once those windows closed,
``streamrec train --from-stream``'s code retrains the head on the labelled examples and publishes
version 2 into the running Triton; the ``treatment`` arm follows ``latest`` to it without a restart
while ``control`` stays pinned to version 1. Phase 2 replays the rest: the A/B test proper.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.settings import Settings
from workers.clicksim import ClickModel, ClickSimulator, held_out
from workers.loop.examples import read_topic
from workers.movielens import load_interactions
from workers.online_metrics import ArmMetrics, Interval, by_arm, dedupe, difference

# Short windows so the demo closes them in seconds (production: STREAMREC_FEEDBACK_WINDOW_S=1800).
LOOP_ENV = {
    "STREAMREC_VARIANTS": '{"control": {"share": 0.5, "version": "1"}, "treatment": {"share": 0.5}}',
    "STREAMREC_EXPLORE_EPSILON": "0.1",
    "STREAMREC_FEEDBACK_WINDOW_S": "10",
    "STREAMREC_FEEDBACK_GRACE_S": "2",
    "STREAMREC_FEEDBACK_SWEEP_S": "1",
}
WINDOW_WAIT_S = 10 + 2 + 1 + 3  # window + grace + one sweep + delivery


@dataclass
class Loop:
    """The simulator's thread and what the loop measured."""

    settings: Settings
    simulator: ClickSimulator
    phase2_started: float | None = None
    retrain: dict[str, Any] = field(default_factory=dict)
    published: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def create(cls, settings: Settings, replayed_events: int, seed: int) -> Loop:
        wants = held_out(load_interactions(seed=seed), replayed_events)
        return cls(settings, ClickSimulator(settings, wants, ClickModel(), seed))

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.simulator.run(self._stop)), name="click-simulator", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def close_windows(self) -> None:
        """Wait until every impression so far has had its window closed (clicks arrive within ~1 s)."""
        time.sleep(WINDOW_WAIT_S)

    def retrain_and_swap(self) -> dict[str, Any]:
        from workers.loop.command import RetrainOptions, retrain_and_publish

        outcome = retrain_and_publish(self.settings, RetrainOptions(min_examples=100, min_positive_groups=5))
        self.retrain = dict(outcome.report)
        if outcome.decision == "promoted" and outcome.version:
            self.published = outcome.version
        self.phase2_started = time.time()
        return self.retrain

    def cleanup(self) -> None:
        """Retire the demo's version and move it out of the served repository (a later fresh Triton
        serves version 1 anyway; this keeps the running one and the folder as they were)."""
        if self.published is None:
            return
        from workers.loop.publish import retire

        retire(self.settings, self.published, reason="demo finished")
        src = self.settings.model_repo / self.settings.ranker_model / self.published
        if src.is_dir():
            dst = self.settings.run_dir / "retired-models" / f"{self.settings.ranker_model}-{self.published}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))

    def readout(self, catalog: dict[str, dict[str, Any]], k: int = 10) -> dict[str, Any]:
        topic = self.settings.topic("training-examples")
        rows = [orjson.loads(value) for _, value in asyncio.run(read_topic(self.settings, topic)) if value]
        rows = dedupe(rows)
        genres = {i: c.get("categories", []) for i, c in catalog.items()}
        cut = self.phase2_started or float("inf")

        def arm(row: Any) -> str:
            phase = "phase2" if float(row["shown_at"]) >= cut else "phase1"
            return f"{phase}:{row['variant']}"

        arms = by_arm(rows, genres, k, arm_of=arm)
        return {
            "examples": len(rows),
            "positives": sum(int(r["label"]) for r in rows),
            "clicks_sent": self.simulator.clicks,
            "purchases_sent": self.simulator.purchases,
            "retrain": self.retrain,
            "published_version": self.published,
            "arms": {name: m.as_dict() for name, m in arms.items()},
            "ctr_lift": {
                phase: lift.__dict__
                for phase in ("phase1", "phase2")
                if (lift := _lift(arms, phase)) is not None
            },
            "window_s": float(LOOP_ENV["STREAMREC_FEEDBACK_WINDOW_S"]),
            "simulation": ClickModel().__dict__,
        }


def _lift(arms: dict[str, ArmMetrics], phase: str) -> Interval | None:
    control, treatment = arms.get(f"{phase}:control"), arms.get(f"{phase}:treatment")
    if control is None or treatment is None:
        return None
    return difference((control.clicked, control.impressions), (treatment.clicked, treatment.impressions))
