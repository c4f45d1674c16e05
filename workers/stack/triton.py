"""The real ``tritonserver`` from the nvidia-pytriton wheel, serving ``model_repo/`` on loopback (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from stream.settings import Settings
from workers.stack.process import ManagedProcess, StackError, port_open

PY_LIBDIR_FILE = "python-libdir"


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("triton", settings.run_dir)


def _model_env(settings: Settings) -> Path:
    env = settings.model_env
    if env is None or not (env / "bin" / "python3").exists():
        raise StackError("model environment not found: run deploy/bootstrap.sh (or set STREAMREC_MODEL_ENV)")
    return env


def _site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3.*/site-packages"))


def server_binary(settings: Settings) -> Path:
    return _site_packages(_model_env(settings)) / "pytriton" / "tritonserver" / "bin" / "tritonserver"


def server_env(settings: Settings) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH for the python backend stub.

    The stub runs Python isolated and takes the environment of the first ``python3`` on PATH;
    LD_LIBRARY_PATH must begin with that interpreter's LIBDIR or libpython symbols mismatch.
    """
    env_dir = _model_env(settings)
    libdir = _python_libdir(env_dir)
    site = _site_packages(env_dir)
    ld = [libdir, str(site / "nvidia_pytriton.libs")]
    if os.environ.get("LD_LIBRARY_PATH"):
        ld.append(os.environ["LD_LIBRARY_PATH"])
    return {
        **os.environ,
        "PATH": f"{env_dir / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LD_LIBRARY_PATH": ":".join(ld),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }


def _python_libdir(env_dir: Path) -> str:
    cached = env_dir / PY_LIBDIR_FILE
    if cached.exists():
        return cached.read_text().strip()
    out = subprocess.run(
        [
            str(env_dir / "bin" / "python3"),
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cached.write_text(out)
    return out


def command(settings: Settings) -> list[str]:
    if settings.triton_backends is None:
        raise StackError("Triton backend directory not set: run deploy/bootstrap.sh")
    host = settings.triton_host
    return [
        str(server_binary(settings)),
        f"--model-repository={settings.model_repo}",
        f"--backend-directory={settings.triton_backends}",
        f"--http-address={host}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        "--disable-auto-complete-config",
        # Explicit control so new model versions are loaded through the repository API.
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--log-verbose=0",
    ]


def ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    url = f"http://{settings.triton_http_url}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def model_config(settings: Settings, model: str) -> dict[str, object]:
    url = f"http://{settings.triton_http_url}/v2/models/{model}/config"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def start(settings: Settings) -> float:
    proc = process(settings)
    if proc.pid() is not None and ready(settings):
        return 0.0
    for port in (settings.triton_http_port, settings.triton_grpc_port, settings.triton_metrics_port):
        if port_open(settings.triton_host, port):
            raise StackError(f"port {port} is taken by another process")
    _clear_stale_shm()
    proc.start(command(settings), env=server_env(settings))
    return proc.wait_ready(lambda: ready(settings), timeout_s=settings.triton_ready_timeout_s)


def _clear_stale_shm() -> None:
    """A crashed python backend leaves its shared-memory regions behind; remove ours when no server runs."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return
    for region in shm.glob("triton_python_backend_shm_region_*"):
        if not _region_in_use(region):
            region.unlink(missing_ok=True)


def _region_in_use(region: Path) -> bool:
    target = str(region)
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if target in maps.read_text(errors="ignore"):
                return True
        except OSError:
            continue
    return False


def stop(settings: Settings) -> bool:
    return process(settings).stop(timeout_s=20)


def is_up(settings: Settings) -> bool:
    return process(settings).pid() is not None and ready(settings)
