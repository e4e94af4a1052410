"""The end-to-end suite's stacks: one `tollgate dev` per test module, on free loopback ports,
with its own data dir under /tmp, and fixtures that make tenants, clusters and tokens through
the admin API.

Each module gets its own stack so that a pool broker that crashes (or a gateway that breaks) in
one module cannot fail every test after it. A stack costs about two seconds to start.

Environment:
  TOLLGATE_BIN           the gateway binary (default: target/release/tollgate in the repo)
  TANSU_BIN              the tansu binary (default: `tansu` on PATH, else ~/.cargo/bin/tansu)
  TOLLGATE_E2E_BROKERS   how many tansu brokers each stack starts (default 1)
"""

from __future__ import annotations

import hashlib
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
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support import Admin, TenantCluster, end_process, policy, unique, wait_until

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0

# Stacks kept (with their data dirs) because a test using them failed or they did not stop
# cleanly; the terminal summary prints their logs.
_KEPT: list["Stack"] = []
# Failed tests per module, to decide whether a module's stack is kept.
_FAILED_IN: dict[str, int] = defaultdict(int)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Nodes each gateway presents (`--lanes`, passed explicitly): lane l listens on the Kafka
# port + l, so a stack needs that many consecutive free ports.
LANES = 3


def free_port_run(n: int, avoid: tuple[int, ...] = ()) -> int:
    """A port p such that p..p+n-1 are all free (and none of them in `avoid`)."""
    for _ in range(100):
        p = free_port()
        run = range(p, p + n)
        if any(q in avoid or q > 65535 for q in run):
            continue
        held = []
        try:
            for q in run:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def gateway_binary() -> str:
    binary = os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "release" / "tollgate"))
    if not Path(binary).exists():
        pytest.exit(f"gateway binary {binary} not found: cargo build --release -p tollgate-gateway",
                    returncode=3)
    return binary


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


#: The tansu crates scripts/install-deps.sh patches in from vendor/ (its TANSU_PATCHED).
TANSU_PATCHED = ("tansu-storage", "tansu-broker")


def tansu_patch_status(tansu: str) -> str:
    """Whether `tansu` is the build scripts/install-deps.sh made with this checkout's
    vendor/tansu-storage and vendor/tansu-broker patched in (it leaves a marker beside the binary); a stock tansu 0.6.0
    deletes every topic on DeleteTopics and fails DescribeGroups on the SQLite engine."""
    path = Path(shutil.which(tansu) or tansu)
    marker = path.parent / ".tansu-tollgate-patch"
    if not marker.exists():
        return "patch unknown (no install-deps marker beside it)"
    vendor = REPO / "vendor"
    files = sorted((p for crate in TANSU_PATCHED for p in (vendor / crate).rglob("*") if p.is_file()),
                   key=lambda p: os.fsencode(str(p.relative_to(vendor))))
    listing = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(vendor)}\n"
                      for p in files)
    expected = (f"patch {hashlib.sha256(listing.encode()).hexdigest()}\n"
                f"binary {hashlib.sha256(path.read_bytes()).hexdigest()}")
    if marker.read_text().strip() == expected:
        return "patched with this checkout's vendor/tansu-storage and vendor/tansu-broker"
    return "NOT this checkout's patch (marker differs): run scripts/install-deps.sh tansu"


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below `pid`, from /proc, so that the teardown can
    tell whether a stack left anything it started behind."""
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
    """A `tollgate dev` (or `tollgate serve`) process: its ports, data dir and logs stay the
    same across restarts, so a test can stop it and start it again on the same state."""

    def __init__(self, binary: str, *, mode: str = "dev", tansu: str | None = None, brokers: int = 1,
                 pool_bootstrap: str | None = None, extra_args: tuple[str, ...] = (),
                 admin_token: str | None = None, label: str | None = None):
        self.label = label or f"tollgate {mode}"
        self.base = Path(tempfile.mkdtemp(prefix="tollgate-e2e-", dir="/tmp"))
        self.data_dir = self.base / "data"
        self.stdout_path = self.base / "stdout.log"
        self.stderr_path = self.base / "stderr.log"
        self.admin_port = free_port()
        self.kafka_port = free_port_run(LANES, avoid=(self.admin_port,))
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        # What clients are shown: lane l on the Kafka port + l.
        self.nodes = [f"127.0.0.1:{self.kafka_port + lane}" for lane in range(LANES)]
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.admin_token = admin_token or "e2e-admin-" + uuid.uuid4().hex
        self.argv = [
            binary, mode,
            "--kafka-listen", self.bootstrap,
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            "--admin-token", self.admin_token,
            "--lanes", str(LANES),
        ]
        if mode == "dev":
            assert tansu is not None
            self.argv += ["--tansu", tansu, "--brokers", str(brokers)]
        else:
            assert pool_bootstrap is not None
            self.argv += ["--pool-bootstrap", pool_bootstrap]
        self.argv += list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.exit_codes: list[int | None] = []  # one per stop or kill by the suite
        self.starts = 0
        self._out = self._err = None

    # -- lifecycle --

    def start(self) -> "Stack":
        assert not self.alive(), "already running"
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        for f in (self._out, self._err):
            f.write(f"===== start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            f.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=env, cwd=self.base)
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> "Stack":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.label} exited during startup\n{self.logs()}")
            if self.healthy():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {timeout}s (GET /healthz -> 200 and "
                           f"a TCP accept on {self.bootstrap})\n{self.logs()}")

    def _close_logs(self) -> None:
        for f in (self._out, self._err):
            if f is not None:
                f.close()
        self._out = self._err = None

    def stop(self) -> tuple[int | None, list[tuple[int, str]]]:
        """SIGTERM, wait; returns the exit code (None if it did not exit) and the processes it
        had started that are still running afterwards."""
        if self.proc is None:
            return 0, []
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
        self.exit_codes.append(code)
        if code is not None:
            self._close_logs()
        return code, left

    def kill(self) -> list[tuple[int, str]]:
        """SIGKILL the gateway and then everything it had started (a crash of the whole host
        process tree); returns what was killed below it."""
        assert self.alive()
        children = descendants(self.proc.pid)
        self.proc.kill()
        self.exit_codes.append(self.proc.wait())
        self.kill_leftovers(children)
        self._close_logs()
        return children

    def kill_leftovers(self, leftovers: list[tuple[int, str]]) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, start in leftovers:
            if still_running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while any(still_running(*c) for c in leftovers) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._close_logs()

    def finish(self, keep: bool) -> list[str]:
        """Stops the stack if it runs and checks the stop was clean: exit 0 (or 143) on SIGTERM
        within SHUTDOWN_TIMEOUT, nothing it started left running. Returns what was wrong.
        Removes the data dir unless `keep` or something was wrong."""
        problems = []
        if self.proc is not None and not self.alive() and len(self.exit_codes) < self.starts:
            # Nobody here stopped it: it crashed, or something outside the suite signalled it.
            self.exit_codes.append(self.proc.returncode)
            problems.append(f"{self.label} exited on its own (exit code {self.proc.returncode}) while in use")
        # A pool broker that panicked (tansu keeps running with its storage task gone) fails
        # every later request: say so, rather than leave it to the next test's timeouts.
        for log in sorted(self.data_dir.rglob("broker-*.log")) if self.data_dir.exists() else []:
            panics = [line for line in log.read_text(errors="replace").splitlines() if "panicked at" in line]
            if panics:
                problems.append(f"pool broker {log.name} panicked: {panics[0]}")
        if self.alive():
            code, left = self.stop()
            if code is None or left:
                self.kill_leftovers(left)
            if code is None:
                problems.append(f"{self.label} did not exit within {SHUTDOWN_TIMEOUT}s of SIGTERM")
            # A clean stop exits 0 (or 128+15 by convention); a negative code means SIGTERM
            # killed it outright, so nothing was flushed.
            elif code not in (0, 128 + signal.SIGTERM):
                problems.append(f"{self.label} exited with {code} on SIGTERM")
            if left:
                problems.append(f"processes started by {self.label} still running after it exited: {left}")
        self._close_logs()
        if keep or problems:
            _KEPT.append(self)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
        return problems

    # -- diagnostics --

    def logs(self, max_lines: int = 200) -> str:
        parts = [f"[{self.label}] command: {' '.join(self.argv)}",
                 f"starts: {self.starts}, exit codes when stopped by the suite: {self.exit_codes}, "
                 f"running: {self.alive()}, last exit code: {None if self.proc is None else self.proc.poll()}"]
        # The pool brokers' own logs, wherever under the data dir the gateway keeps them.
        pool_logs = sorted(self.data_dir.rglob("*.log")) if self.data_dir.exists() else []
        named = [("stdout", self.stdout_path), ("stderr", self.stderr_path)]
        named += [(f"pool {p.relative_to(self.data_dir)}", p) for p in pool_logs]
        for name, path in named:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"<unreadable: {e}>"]
            cut = f" (last {max_lines} of {len(lines)} lines)" if len(lines) > max_lines else ""
            parts.append(f"----- {self.label} {name}{cut} -----")
            parts.extend(lines[-max_lines:])
        return "\n".join(parts)


@contextmanager
def serve_pair(pool_bootstrap: str, redis_url: str, tmp_path: Path, extra_args: tuple[str, ...] = (),
               advertise_both: bool = False) -> Iterator[tuple[list[Stack], str]]:
    """Two `tollgate serve` gateways ("a", "b") on one pool and one Redis, sharing a token
    signing key file and an admin token; yields (gateways, admin token) once both are ready.
    With `advertise_both` both present the same two gateway nodes (`--advertise A,B`), so a
    client may bootstrap from either; otherwise each advertises only its own node. On leaving,
    each gateway is finished (kept for inspection if the body failed) and a clean exit asserts
    no problems were found."""
    key_file = tmp_path / "token-signing.key"
    key_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    key_file.chmod(0o600)
    token = "e2e-admin-" + unique("", 16)
    gateways: list[Stack] = []
    ok = False
    try:
        for name in ("a", "b"):
            gateways.append(Stack(gateway_binary(), mode="serve", pool_bootstrap=pool_bootstrap,
                                  admin_token=token,
                                  extra_args=("--redis-url", redis_url, "--token-signing-key-file",
                                              str(key_file), *extra_args),
                                  label=f"tollgate serve {name}"))
        nodes = ",".join(g.bootstrap for g in gateways)
        for g in gateways:
            if advertise_both:
                g.argv += ["--advertise", nodes]
            g.start().wait_ready()
        yield gateways, token
        ok = True
    finally:
        problems = []
        for g in gateways:
            problems += g.finish(keep=not ok)
    assert not problems, problems


def start_dev_stack(extra_args: tuple[str, ...] = (), label: str | None = None) -> Stack:
    s = Stack(gateway_binary(), mode="dev", tansu=find_tansu(),
              brokers=int(os.environ.get("TOLLGATE_E2E_BROKERS", "1")), extra_args=extra_args,
              label=label)
    s.start()
    try:
        s.wait_ready()
    except RuntimeError as e:
        s.finish(keep=True)
        pytest.fail(str(e), pytrace=False)
    return s


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _FAILED_IN[item.nodeid.split("::")[0]] += 1
    return report


@pytest.fixture(scope="module")
def stack(request) -> Stack:
    """This module's `tollgate dev`, with the module's `STACK_ARGS` (a tuple of extra
    arguments) if it has any; stopped at the end of the module, which must be clean."""
    s = start_dev_stack(tuple(getattr(request.module, "STACK_ARGS", ())),
                        label=f"tollgate dev for {request.module.__name__}")
    yield s
    problems = s.finish(keep=_FAILED_IN[request.node.nodeid.split("::")[0]] > 0)
    assert not problems, "\n".join(problems) + "\n" + s.logs()


@pytest.fixture
def stack_factory(request) -> Callable[..., Stack]:
    """Factory for tests that need stacks of their own (restarts, other flags):
    stack_factory(extra_args=(), label=None) -> a started, ready `tollgate dev`. Each is
    stopped at the end of the test with the same checks as the module stack."""
    made: list[Stack] = []

    def make(extra_args: tuple[str, ...] = (), label: str | None = None) -> Stack:
        s = start_dev_stack(extra_args, label or f"tollgate dev for {request.node.name}")
        made.append(s)
        return s

    yield make
    problems = []
    for s in made:
        problems += s.finish(keep=_FAILED_IN[request.node.nodeid.split("::")[0]] > 0)
    assert not problems, "\n".join(problems) + "\n" + "\n".join(s.logs() for s in made)


@pytest.fixture
def redis_server():
    """A real redis-server on a free loopback port, without persistence; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: run scripts/install-deps.sh apt", pytrace=False)
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(up, 20, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/"
    finally:
        end_process(proc)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Admin:
    return Admin(stack.admin_url, stack.admin_token)


def make_tenant(stack: Stack, admin: Admin, actions: list[str] | None = None, ttl_seconds: int = 3600,
                principal: str = "e2e-svc", **cluster_fields) -> TenantCluster:
    tenant = unique("t", 12)
    admin.create_tenant(tenant, f"E2E tenant {tenant}")
    cluster = admin.create_cluster(tenant, unique("c", 8), **cluster_fields)
    tok = admin.create_token(cluster["id"], principal, policy(tenant, cluster["name"], actions), ttl_seconds)
    return TenantCluster(tenant=tenant, cluster=cluster, token=tok["token"], expires_at=tok["expires_at"],
                         bootstrap=stack.bootstrap)


@pytest.fixture
def new_tenant(stack: Stack, admin: Admin):
    """Factory: new_tenant(actions=None, ttl_seconds=3600, principal="e2e-svc") ->
    TenantCluster, a fresh tenant with one cluster and a token whose policy allows `actions`
    (default: support.FULL_ACTIONS) on that cluster's resources."""

    def make(actions: list[str] | None = None, ttl_seconds: int = 3600, **kw) -> TenantCluster:
        return make_tenant(stack, admin, actions, ttl_seconds, **kw)

    return make


@pytest.fixture
def mint_token(admin: Admin):
    """mint_token(tc, actions, ttl_seconds=3600, principal=None) -> JWT: another token for an
    existing cluster."""

    def mint(tc: TenantCluster, actions: list[str] | None = None, ttl_seconds: int = 3600,
             principal: str | None = None) -> str:
        return admin.create_token(tc.cluster_id, principal or unique("p-", 6),
                                  policy(tc.tenant, tc.cluster_name, actions), ttl_seconds)["token"]

    return mint


def pytest_report_header(config):
    tansu = os.environ.get("TANSU_BIN") or shutil.which("tansu") or "(not found)"
    status = tansu_patch_status(tansu) if tansu != "(not found)" else ""
    binary = os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "release" / "tollgate"))
    return [f"tollgate: {binary}", f"tansu: {tansu} ({status})"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for s in _KEPT:
        terminalreporter.section(f"{s.label} logs")
        terminalreporter.write_line(f"(kept in {s.base})")
        terminalreporter.write_line(s.logs())
