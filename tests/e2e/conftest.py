"""The end-to-end suite's stack: one `tollgate dev` for the whole session, on free loopback
ports, with its own data dir under /tmp, and fixtures that make tenants, clusters and tokens
through the admin API.

Environment:
  TOLLGATE_BIN           the gateway binary (default: target/release/tollgate in the repo)
  TANSU_BIN              the tansu binary (default: `tansu` on PATH, else ~/.cargo/bin/tansu)
  TOLLGATE_E2E_BROKERS   how many tansu brokers the stack starts (default 1)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from support import Admin, TenantCluster, policy, unique

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0

# Set once the stack is up, so the terminal summary can show its logs when tests failed.
_STACK: "Stack | None" = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_tansu() -> str:
    explicit = os.environ.get("TANSU_BIN")
    if explicit:
        return explicit
    found = shutil.which("tansu")
    if found:
        return found
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    candidate = cargo_home / "bin" / "tansu"
    if candidate.exists():
        return str(candidate)
    pytest.exit("tansu not found: run scripts/install-deps.sh tansu", returncode=3)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below `pid`, from /proc, so that the teardown can
    tell whether `tollgate dev` left anything it started behind."""
    parent_of: dict[int, int] = {}
    start_of: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces; fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        parent_of[int(entry)] = int(fields[1])
        start_of[int(entry)] = fields[19]
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parent_of.items():
            if parent == p:
                found.append((child, start_of[child]))
                frontier.append(child)
    return found


def still_running(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] == start and fields[0] != "Z"


class Stack:
    """A running `tollgate dev`."""

    def __init__(self, binary: str, tansu: str, brokers: int):
        self.base = Path(tempfile.mkdtemp(prefix="tollgate-e2e-", dir="/tmp"))
        self.data_dir = self.base / "data"
        self.stdout_path = self.base / "stdout.log"
        self.stderr_path = self.base / "stderr.log"
        self.kafka_port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.kafka_port:
            self.admin_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.admin_token = "e2e-admin-" + uuid.uuid4().hex
        self.argv = [
            binary, "dev",
            "--kafka-listen", self.bootstrap,
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            "--admin-token", self.admin_token,
            "--tansu", tansu,
            "--brokers", str(brokers),
        ]
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=env, cwd=self.base)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self, max_lines: int = 200) -> str:
        parts = [f"command: {' '.join(self.argv)}", f"exit code: {self.proc.poll()}"]
        # The pool brokers' own logs, wherever under the data dir the gateway keeps them.
        pool_logs = sorted(self.data_dir.rglob("*.log")) if self.data_dir.exists() else []
        named = [("tollgate stdout", self.stdout_path), ("tollgate stderr", self.stderr_path)]
        named += [(f"pool {p.relative_to(self.data_dir)}", p) for p in pool_logs]
        for name, path in named:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"<unreadable: {e}>"]
            cut = f" (last {max_lines} of {len(lines)} lines)" if len(lines) > max_lines else ""
            parts.append(f"----- {name}{cut} -----")
            parts.extend(lines[-max_lines:])
        return "\n".join(parts)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.admin_url + "/healthz", timeout=2) as resp:
                http_ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            return False
        if not http_ok:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.kafka_port), timeout=2):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError("tollgate dev exited during startup")
            if self.healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"tollgate dev not ready after {timeout}s (GET /healthz -> 200 and "
                           f"a TCP accept on {self.bootstrap})")

    def stop(self) -> tuple[int | None, list[tuple[int, str]]]:
        """SIGTERM, wait; returns the exit code (None if it did not exit) and the processes it
        had started that are still running afterwards."""
        children = descendants(self.proc.pid) if self.alive() else []
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 10
        left = [c for c in children if still_running(*c)]
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [c for c in left if still_running(*c)]
        return code, left

    def kill_leftovers(self, leftovers: list[tuple[int, str]]) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, start in leftovers:
            if still_running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close_logs(self) -> None:
        self._out.close()
        self._err.close()


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    global _STACK
    binary = os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "release" / "tollgate"))
    if not Path(binary).exists():
        pytest.exit(f"gateway binary {binary} not found: cargo build --release -p tollgate-gateway",
                    returncode=3)
    tansu = find_tansu()
    brokers = int(os.environ.get("TOLLGATE_E2E_BROKERS", "1"))
    s = Stack(binary, tansu, brokers)
    _STACK = s
    try:
        s.wait_ready(STARTUP_TIMEOUT)
    except RuntimeError as e:
        code, left = s.stop()
        s.kill_leftovers(left)
        s.close_logs()
        pytest.fail(f"{e}\n{s.logs()}", pytrace=False)

    yield s

    code, left = s.stop()
    s.close_logs()
    if code is None or left:
        s.kill_leftovers(left)
    assert code is not None, f"tollgate dev did not exit within {SHUTDOWN_TIMEOUT}s of SIGTERM\n{s.logs()}"
    # A clean stop exits 0 (or 128+15 by convention); a negative code means SIGTERM killed it
    # outright, so nothing was flushed.
    assert code in (0, 128 + signal.SIGTERM), f"tollgate dev exited with {code} on SIGTERM\n{s.logs()}"
    assert not left, f"processes started by tollgate dev still running after it exited: {left}"
    if request.session.testsfailed == 0:
        shutil.rmtree(s.base, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Admin:
    return Admin(stack.admin_url, stack.admin_token)


@pytest.fixture
def new_tenant(stack: Stack, admin: Admin):
    """Factory: new_tenant(actions=None, ttl_seconds=3600) -> TenantCluster, a fresh tenant
    with one cluster and a token whose policy allows `actions` (default: support.FULL_ACTIONS)
    on that cluster's resources."""

    def make(actions: list[str] | None = None, ttl_seconds: int = 3600, **cluster_fields) -> TenantCluster:
        tenant = unique("t", 12)
        admin.create_tenant(tenant, f"E2E tenant {tenant}")
        cluster = admin.create_cluster(tenant, unique("c", 8), **cluster_fields)
        tok = admin.create_token(cluster["id"], "e2e-svc", policy(tenant, cluster["name"], actions),
                                 ttl_seconds)
        return TenantCluster(tenant=tenant, cluster=cluster, token=tok["token"],
                             expires_at=tok["expires_at"], bootstrap=stack.bootstrap)

    return make


@pytest.fixture
def mint_token(admin: Admin):
    """mint_token(tc, actions, ttl_seconds=3600) -> JWT: another token for an existing cluster."""

    def mint(tc: TenantCluster, actions: list[str] | None = None, ttl_seconds: int = 3600) -> str:
        return admin.create_token(tc.cluster_id, unique("p-", 6), policy(tc.tenant, tc.cluster_name, actions),
                                  ttl_seconds)["token"]

    return mint


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _STACK is not None and (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        terminalreporter.section("tollgate dev logs")
        terminalreporter.write_line(f"(kept in {_STACK.base})")
        terminalreporter.write_line(_STACK.logs())
