"""``streamrec train --from-stream``: collect -> retrain in the model env -> gate -> publish.

Exit codes: 0 promoted (or evaluated with ``publish=False``), 3 too few examples, 4 the new head is
worse than the served one on held-out requests, 5 the published version was refused (load or canary),
1 the retrain step itself failed. Nothing is published unless the code is 0 and ``version`` is set.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from stream.settings import Settings
from workers.loop import examples, registry, train
from workers.loop.probe import Probe
from workers.loop.publish import publish
from workers.model.config import HEAD

EXIT_OK, EXIT_FAILED, EXIT_TOO_FEW, EXIT_NOT_BETTER, EXIT_REFUSED = 0, 1, 3, 4, 5


@dataclass(frozen=True)
class RetrainOptions:
    min_examples: int = 200
    min_positive_groups: int = 10  # requests with a click and a shown-not-clicked item
    tolerance: float = 0.0
    base_version: str | None = None  # default: the latest promoted version, else 1
    publish: bool = True
    epochs: int | None = None


@dataclass
class RetrainOutcome:
    decision: str  # promoted | refused | not_better | too_few_examples | evaluated | failed
    exit_code: int
    report: dict[str, Any]
    version: str | None = None


def too_few(collected: examples.Collected, options: RetrainOptions) -> str | None:
    if collected.rows < options.min_examples:
        return f"{collected.rows} usable examples, fewer than --min-examples {options.min_examples}"
    if collected.positive_groups < options.min_positive_groups:
        return (
            f"{collected.positive_groups} requests with both a click and a non-click, "
            f"fewer than {options.min_positive_groups}"
        )
    return None


def metrics_of(body: dict[str, Any], k: int) -> train.Metrics:
    return train.Metrics(mrr=float(body["mrr"]), ndcg=float(body[f"ndcg@{k}"]), groups=int(body["groups"]))


def base_version_for(settings: Settings, options: RetrainOptions) -> str:
    if options.base_version:
        return options.base_version
    promoted = registry.latest_promoted(registry.read(settings), settings.ranker_model)
    if promoted and (settings.model_repo / settings.ranker_model / promoted / HEAD).is_file():
        return promoted
    return "1"


def run_retrain(args: list[str]) -> int:
    from workers.model.runner import run_in_model_env

    return run_in_model_env("workers.loop.retrain", args)


def retrain_and_publish(settings: Settings, options: RetrainOptions = RetrainOptions()) -> RetrainOutcome:
    started = time.perf_counter()
    work = settings.run_dir / "retrain" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    collected = examples.collect(settings, work / "examples.jsonl")
    report: dict[str, Any] = {
        "decision": None,
        "version": None,
        "tolerance": options.tolerance,
        "counts": {
            "examples": collected.rows,
            "requests": collected.requests,
            "positive_groups": collected.positive_groups,
            "duplicates": collected.duplicates,
            "invalid": collected.invalid,
            "missing_items": collected.missing_items,
        },
        "seconds": {"collect": collected.seconds},
        "run_dir": str(work),
    }

    def done(decision: str, code: int, reason: str, version: str | None = None) -> RetrainOutcome:
        report.update(decision=decision, reason=reason, version=version)
        report["seconds"]["total"] = round(time.perf_counter() - started, 2)
        (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        return RetrainOutcome(decision, code, report, version)

    short = too_few(collected, options)
    if short:
        return done("too_few_examples", EXIT_TOO_FEW, short)
    base = base_version_for(settings, options)
    report["base_version"] = base
    t0 = time.perf_counter()
    base_dir = (settings.model_repo / settings.ranker_model / base).resolve()
    args = ["fit", "--examples", str(collected.path.resolve()), "--base-dir", str(base_dir)]
    args += ["--out", str(work.resolve()), *(["--epochs", str(options.epochs)] if options.epochs else [])]
    rc = run_retrain(args)
    report["seconds"]["retrain"] = round(time.perf_counter() - t0, 2)
    if rc != 0:
        return done("failed", EXIT_FAILED, f"python -m workers.loop.retrain exited with {rc}")
    result = json.loads((work / "result.json").read_text())
    k = int(result["params"]["k"])
    report.update(base=result["base"], new=result["new"], logged=result["logged"])
    report["counts"].update(result["counts"])
    gate = train.decide(metrics_of(result["base"], k), metrics_of(result["new"], k), options.tolerance)
    report["gate"] = gate.reason
    if not gate.publish:
        return done("not_better", EXIT_NOT_BETTER, gate.reason)
    if not options.publish:
        return done("evaluated", EXIT_OK, gate.reason)
    t1 = time.perf_counter()
    metrics = {
        "holdout_mrr_base": result["base"]["mrr"],
        "holdout_mrr": result["new"]["mrr"],
        f"holdout_ndcg@{k}_base": result["base"][f"ndcg@{k}"],
        f"holdout_ndcg@{k}": result["new"][f"ndcg@{k}"],
        "holdout_groups": float(result["new"]["groups"]),
        "examples": float(collected.rows),
    }
    published = publish(
        settings,
        work / HEAD,
        base_version=base,
        probe=Probe.load(work / "probe.json"),
        metrics=metrics,
        provenance={"run_dir": str(work), "examples_file": str(collected.path)},
    )
    report["seconds"]["publish"] = round(time.perf_counter() - t1, 2)
    report["publish"] = published.summary()
    if published.status != "promoted":
        return done("refused", EXIT_REFUSED, published.reason, published.version)
    return done("promoted", EXIT_OK, gate.reason, published.version)


def report_line(outcome: RetrainOutcome) -> str:
    return json.dumps(outcome.report, default=str)
