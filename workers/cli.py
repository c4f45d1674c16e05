"""The ``streamrec`` command line: thin commands over the modules that do the work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from stream.settings import ROOT, Settings, SettingsError, get_settings

app = typer.Typer(help="streamrec: streaming real-time recommendations", no_args_is_help=True)
stack_app = typer.Typer(
    help="The local stack: a real Kafka broker and a real Triton server", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka and Triton (idempotent) and wait until both are ready."""
    from workers.stack import control, kafka, triton
    from workers.stack.process import StackError

    settings = _settings()
    try:
        timings = control.up(settings)
    except StackError as exc:
        console.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"kafka   ready in {timings['kafka']:.1f}s  bootstrap={settings.kafka_bootstrap}  "
        f"log={kafka.process(settings).log_file}"
    )
    console.print(
        f"triton  ready in {timings['triton']:.1f}s  grpc={settings.triton_grpc_url} "
        f"http={settings.triton_http_url} metrics={settings.triton_metrics_url}  "
        f"log={triton.process(settings).log_file}"
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop Triton and Kafka."""
    from workers.stack import control

    control.down(_settings())
    console.print("stack stopped")


@stack_app.command("status")
def stack_status(as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON")) -> None:
    """Report whether each server is up; exits 1 when any part is down."""
    from workers.stack import control

    settings = _settings()
    state = control.status(settings)
    report = control.status_json(settings, state)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for name, info in report.items():
            mark = "[green]up[/green]" if info["up"] else "[red]down[/red]"
            where = "  ".join(f"{k}={v}" for k, v in info.items() if k != "up")
            console.print(f"{name:7} {mark}  {where}")
    if not state.all_up:
        raise typer.Exit(1)


@app.command("demo")
def demo(
    events: int = typer.Option(3000, "--events", help="ratings to replay (0: all 100,000)"),
    queries: int = typer.Option(-1, "--queries", help="search queries (default: events / 10)"),
    speed: float = typer.Option(
        0.0, "--speed", help="time compression of MovieLens time (0: use --max-rate)"
    ),
    max_rate: float = typer.Option(
        150.0, "--max-rate", help="messages per second at most (a tenth are queries)"
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=8, help="stream workers sharing the partitions"),
    keep: bool = typer.Option(False, "--keep", help="leave the stack running afterwards"),
    loop: bool = typer.Option(
        True, "--loop/--no-loop", help="simulated clicks, retrain from the stream, hot swap, A/B readout"
    ),
    seed: int = typer.Option(0, "--seed"),
    out_root: Path = typer.Option(ROOT / "reports", "--out-root", help="where report folders go"),
) -> None:
    """The main job: stack up, workers, MovieLens replay with a live view, and a report."""
    from workers.demo import DemoOptions, run_demo

    opts = DemoOptions(
        events=events,
        queries=None if queries < 0 else queries,
        speed=speed,
        max_rate=max_rate,
        workers=workers,
        keep=keep,
        loop=loop,
        seed=seed,
        out_root=out_root,
    )
    try:
        out = run_demo(_settings(), opts, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: workers stopped[/yellow]")
        raise typer.Exit(130) from None
    sys.stdout.write(f"{out}\n")


@app.command("train")
def train(
    mode: str = typer.Option("cheap", "--mode", help="cheap: frozen encoder + trained head; full: fine-tune"),
    steps: int = typer.Option(0, "--steps", help="training steps (0: the config's default)"),
    time_cut: bool = typer.Option(False, "--time-cut", help="train only on data before the global time cut"),
    from_stream: bool = typer.Option(
        False, "--from-stream", help="fine-tune the served head on the training-examples topic and publish it"
    ),
    min_examples: int = typer.Option(200, "--min-examples", help="--from-stream: fewer examples exit 3"),
    tolerance: float = typer.Option(
        0.0, "--tolerance", help="--from-stream: publish if held-out MRR >= base - this"
    ),
    base_version: str = typer.Option("", "--base-version", help="--from-stream: default the latest promoted"),
    publish: bool = typer.Option(
        True, "--publish/--no-publish", help="--from-stream: --no-publish only evaluates"
    ),
) -> None:
    """Train the ranker in the model environment (torch); artifacts go to models/.

    --from-stream prints one JSON line (both heads' held-out metrics and the decision) and exits 0
    promoted, 3 too few examples, 4 not better than the served head, 5 refused by load or canary.
    """
    from workers.model.runner import run_in_model_env

    if from_stream:
        from workers.loop.command import RetrainOptions, report_line, retrain_and_publish

        options = RetrainOptions(
            min_examples=min_examples,
            tolerance=tolerance,
            base_version=base_version or None,
            publish=publish,
            epochs=steps or None,
        )
        outcome = retrain_and_publish(_settings(), options)
        sys.stdout.write(report_line(outcome) + "\n")
        if outcome.exit_code:
            console.print(
                f"[yellow]nothing promoted ({outcome.decision}):[/yellow] {outcome.report.get('reason')}"
            )
        raise typer.Exit(outcome.exit_code)
    if mode not in ("cheap", "full"):
        raise typer.BadParameter("--mode must be cheap or full")
    args = [
        "--mode",
        mode,
        *(["--steps", str(steps)] if steps else []),
        *(["--time-cut"] if time_cut else []),
    ]
    raise typer.Exit(run_in_model_env("workers.model.train", args))


@app.command("serve-registered")
def serve_registered() -> None:
    """After a Triton restart (it serves only the committed version 1): load every version the model
    registry says is promoted, so the A/B arms routed to them rank again instead of falling back."""
    from workers.loop.publish import serve_registered as serve

    served = serve(_settings())
    console.print(f"ranker versions served: {served}")


@app.command("eval")
def evaluate(
    as_json: bool = typer.Option(False, "--json", help="print method -> metrics as JSON"),
    quick: bool = typer.Option(False, "--quick", help="a fixed sample of users (minutes)"),
    protocol: str = typer.Option("leave_last_out", "--protocol", help="leave_last_out | time_cut | both"),
) -> None:
    """Offline evaluation against the full catalog: streamrec vs the baselines."""
    from workers.model.runner import run_in_model_env

    args = [*(["--json"] if as_json else []), *(["--quick"] if quick else []), "--protocol", protocol]
    raise typer.Exit(run_in_model_env("workers.evaluation.run", args))


def main() -> None:
    app()


@app.command("worker")
def worker() -> None:
    """Run one stream worker in the foreground (several may run; they share the partitions)."""
    from workers.worker import run_worker

    run_worker(_settings())


@app.command("replay")
def replay(
    events: int = typer.Option(2000, "--events", help="how many ratings to replay (0: all 100,000)"),
    queries: int = typer.Option(200, "--queries", help="synthetic search queries interleaved"),
    speed: float = typer.Option(0.0, "--speed", help="time compression (0: as fast as --max-rate allows)"),
    max_rate: float = typer.Option(2000.0, "--max-rate", help="messages per second at most (0: no cap)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Publish MovieLens-100K (catalog, events, queries) to the topics."""
    import asyncio

    from rich.progress import Progress

    from workers.replay import plan, publish

    settings = _settings()
    replay_plan = plan(events or None, queries, seed=seed)
    with Progress(console=console) as bar:
        task = bar.add_task("replaying", total=len(replay_plan.stream))
        counts = asyncio.run(
            publish(
                settings, replay_plan, speed, max_rate, progress=lambda n, _t: bar.update(task, completed=n)
            )
        )
    console.print(f"published {counts}")
