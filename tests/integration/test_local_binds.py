"""In local mode every server streamrec starts listens on loopback only: Kafka (broker and controller),
Triton (HTTP, gRPC, metrics) and the worker's web server. Read from /proc, so the test sees every
listening socket the processes own, including any a default opened that the settings do not name."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from stream.settings import Settings
from workers.stack import kafka, triton
from workers.supervisor import WorkerProcess


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/tcp6 prints the address as four host-order 32-bit words.
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``pid`` and its threads."""
    inodes = _socket_inodes(pid)
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                addr, port = local.split(":")
                out.append((str(_address(addr)), int(port, 16)))
    return out


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def test_every_server_listens_on_loopback_only(
    stack: Settings,
    env: dict[str, str],
    isolated: Settings,
    tmp_path: Path,
    worker_factory: list[WorkerProcess],
) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    worker_factory.append(worker)
    worker.wait_ready(timeout_s=90)
    assert worker.proc is not None
    kafka_pid, triton_pid = kafka.process(stack).pid(), triton.process(stack).pid()
    assert kafka_pid is not None and triton_pid is not None, "the stack's servers have no pid files"

    servers = {
        "kafka": (kafka_pid, {stack.kafka_port, stack.kafka_controller_port}),
        "triton": (triton_pid, {stack.triton_http_port, stack.triton_grpc_port, stack.triton_metrics_port}),
        "worker": (worker.proc.pid, {isolated.web_port}),
    }
    for name, (pid, ports) in servers.items():
        sockets = listening(pid)
        assert ports <= {port for _, port in sockets}, f"{name} does not listen on {ports}: {sockets}"
        exposed = [(a, p) for a, p in sockets if not _is_loopback(a)]
        assert not exposed, f"{name} listens beyond loopback: {exposed}"
