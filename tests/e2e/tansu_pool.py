#!/usr/bin/env python3
"""An operator's scale command for a pool of tansu brokers on one SQLite store, as
`tollgate serve --pool-scale-command` runs it: `tansu_pool.py DIR N` leaves the first N of the
ports listed in DIR/ports (one per line) with a running broker and stops the rest (SIGTERM,
then SIGKILL). The brokers run detached, with their pid in DIR/broker-PORT.pid and their log in
DIR/broker-PORT.log; `N` = 0 stops them all.

Environment: TANSU_BIN (default: `tansu`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def start(directory: Path, port: int, tansu: str) -> None:
    url = f"tcp://127.0.0.1:{port}"
    log = open(directory / f"broker-{port}.log", "ab")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")}
    env["RUST_LOG"] = "warn"
    proc = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "sqlite://tansu.db", "--cluster-id", "tollgate-e2e"],
                            cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True)
    (directory / f"broker-{port}.pid").write_text(str(proc.pid))


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    directory, n = Path(sys.argv[1]), int(sys.argv[2])
    ports = [int(line) for line in (directory / "ports").read_text().split()]
    if n > len(ports):
        print(f"asked for {n} brokers, {directory / 'ports'} lists {len(ports)}", file=sys.stderr)
        return 1
    tansu = os.environ.get("TANSU_BIN", "tansu")
    for i, port in enumerate(ports):
        pid = running(directory / f"broker-{port}.pid")
        if i < n and pid is None:
            start(directory, port, tansu)
        elif i >= n and pid is not None:
            stop(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
