"""Run untrusted generated code: kernel isolation, resource limits, and a verdict that leaks nothing.

Each check runs in its own namespaces (bubblewrap, or unshare where bwrap is missing; see
isolation.py) as a uid of its own with no capabilities, under a seccomp filter that refuses new
processes, sockets and signals, with CPU, memory, file-size and process rlimits, a wall-clock
kill, and the audit hook as a second layer. Where no kernel isolation is available the check is
refused (SandboxUnavailable) unless weak mode is allowed explicitly, which runs the in-process
layers only. The stored detail is composed from the harness's structured verdict (verdict.py),
never from the program's output or exception messages.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from pipelines.evaluation import isolation, verdict
from pipelines.evaluation.isolation import PROJECT_ROOT  # noqa: F401 - re-exported

# Started by root, each check runs as a random uid/gid from this range: no other process has it,
# so RLIMIT_NPROC counts the check's own processes and nothing else can be signalled or read.
SANDBOX_UID_BASE = 1_600_000_000
SANDBOX_UID_RANGE = 1 << 24
_REPORT_BYTES = 1 << 16
_STDERR_BYTES = 8192


class SandboxUnavailable(RuntimeError):
    """No kernel isolation here, and weak mode was not allowed: generated code must not run."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_mb: int = 1024  # address space
    file_mb: int = 10  # largest file the program may write
    processes: int = 64  # RLIMIT_NPROC, threads included (only when started by root: uid of its own)


@dataclass(frozen=True)
class SandboxSettings:
    """How checks are isolated. Picklable: it travels to the Spark executors."""

    allow_weak: bool = False  # no kernel isolation: run with the in-process layers only
    hidden_paths: tuple[str, ...] = ()  # hidden besides isolation.ALWAYS_HIDDEN, home, project, tmp
    backend: str = "auto"  # auto (bwrap, else unshare), bwrap, unshare, or weak (needs allow_weak)
    # Each layer can be switched off alone, so that tests show the others contain the program.
    audit_hook: bool = True
    seccomp: bool = True


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | error
    detail: str
    sandbox: str = ""  # the backend it ran in: bwrap, unshare or weak

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Check:
    """A program to run: the solution, then the test code, then check(entry_point) when given."""

    solution: str
    test: str = ""
    entry_point: str | None = None

    @classmethod
    def humaneval(cls, problem: dict, completion: str) -> "Check":
        return cls(problem["prompt"] + completion, problem["test"], problem["entry_point"])


def run_check(check: Check, limits: SandboxLimits = SandboxLimits(),
              settings: SandboxSettings = SandboxSettings()) -> SandboxResult:
    """Run one check in the sandbox; raises SandboxUnavailable rather than run it unisolated."""
    return _execute(check, limits, settings, resolve_backend(settings))


def run_program(program: str, limits: SandboxLimits = SandboxLimits(),
                settings: SandboxSettings = SandboxSettings()) -> SandboxResult:
    """A plain program passes when it runs to its end without an exception."""
    return run_check(Check(program), limits, settings)


def result_json(result: SandboxResult) -> str:
    return json.dumps({"status": result.status, "detail": result.detail, "sandbox": result.sandbox})


def resolve_backend(settings: SandboxSettings) -> str:
    """The backend to use: the first of bwrap, unshare that works here, else weak if allowed."""
    if settings.backend == "weak":
        if not settings.allow_weak:
            raise SandboxUnavailable("backend 'weak' needs allow_weak (--allow-weak-sandbox)")
        return "weak"
    if settings.backend not in ("auto", *isolation.BACKENDS):
        raise ValueError(f"unknown sandbox backend {settings.backend!r}: auto, bwrap, unshare or weak")
    candidates = isolation.BACKENDS if settings.backend == "auto" else (settings.backend,)
    reasons = []
    for backend in candidates:
        problem = probe(backend)
        if problem is None:
            return backend
        reasons.append(f"{backend}: {problem}")
    if settings.allow_weak and settings.backend == "auto":
        return "weak"
    raise SandboxUnavailable(
        "refusing to run generated code: no kernel isolation on this machine ("
        + "; ".join(reasons)
        + "). Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; on Databricks, the init "
        "script scripts/databricks-init-sandbox.sh), or run as root, or as a user allowed to create "
        "user namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
        "kernel.apparmor_restrict_unprivileged_userns=0). To run it with the in-process guard only, "
        "pass --allow-weak-sandbox (config evaluation.allow_weak_sandbox: true)."
    )


@functools.lru_cache(maxsize=None)
def probe(backend: str) -> str | None:
    """None when `backend` runs a trivial check here, else what went wrong (cached per process)."""
    tool = isolation.find(backend)
    if tool is None:
        return f"{backend} is not installed"
    result = _execute(Check("pass"), SandboxLimits(timeout_s=20), SandboxSettings(backend=backend), backend)
    return None if result.passed else f"{result.status}: {result.detail}"


def _world_readable(path: str) -> bool:
    """Can any user reach `path`: every directory above it searchable by others."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def _own_uid(backend: str) -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None  # a user namespace maps only this user: the harness drops capabilities
    if backend == "weak" and not all(_world_readable(p) for p in (sys.base_prefix, str(isolation.HARNESS_DIR))):
        return None, None  # without a mount namespace another uid could not load the interpreter
    uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_RANGE)
    return uid, uid


def _command(backend: str, lay: isolation.Layout, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    root = os.geteuid() == 0
    if backend == "bwrap":
        return isolation.bwrap_command(isolation.find("bwrap"), lay, argv, root), {"PATH": isolation.PATH}
    if backend == "unshare":
        return isolation.unshare_command(isolation.find("unshare"), lay, argv, root), {"PATH": isolation.PATH}
    return argv, isolation.program_env(lay.workdir)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process to end, at most `timeout` seconds; True when it ended.

    A pidfd wakes up the moment it exits (Popen.wait(timeout) polls, up to 50 ms late)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Linux < 5.3
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if ready:
        proc.wait()
    return bool(ready)


def _read_available(fd: int, limit: int) -> bytes:
    """What is in a pipe now, up to `limit`; never waits for a writer that may still hold it."""
    os.set_blocking(fd, False)
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = os.read(fd, min(65536, limit - size))
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _execute(check: Check, limits: SandboxLimits, settings: SandboxSettings, backend: str) -> SandboxResult:
    uid, gid = _own_uid(backend)
    workdir = tempfile.mkdtemp(prefix="sandbox-")
    spec_fd = report_r = report_w = None
    try:
        if uid is not None:
            os.chown(workdir, uid, gid)
        lay = isolation.layout(workdir, tuple(settings.hidden_paths))
        inside = lay.workdir if backend == "weak" else isolation.WORKDIR_INSIDE
        spec = {
            "solution": check.solution, "test": check.test, "entry_point": check.entry_point,
            "workdir": inside, "uid": uid, "gid": gid,
            "limits": {"cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
                       "processes": limits.processes if uid is not None else None},
            "seccomp": settings.seccomp, "audit_hook": settings.audit_hook,
            "loopback_down": backend == "bwrap",  # unshare's new network namespace starts with it down
            # For the audit hook (the only file guard in weak mode).
            "hidden": list(lay.hidden), "exposed": [*lay.exposed, *isolation.interpreter_dirs(), inside],
        }
        spec_fd = os.memfd_create("sandbox-spec")
        os.write(spec_fd, json.dumps(spec).encode())
        os.lseek(spec_fd, 0, os.SEEK_SET)
        report_r, report_w = os.pipe()
        command, env = _command(backend, lay, isolation.harness_argv(spec_fd, report_w))
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(spec_fd, report_w), env=env, cwd=lay.workdir if backend == "weak" else "/",
            start_new_session=True,  # one process group: the timeout kills all of it
        )
        os.close(report_w)
        report_w = None
        timed_out = not _wait(proc, limits.timeout_s)
        if timed_out:
            os.killpg(proc.pid, signal.SIGKILL)  # namespaces die with their PID 1 (--die-with-parent)
            proc.wait()
        report = _read_available(report_r, _REPORT_BYTES)
        stderr = _read_available(proc.stderr.fileno(), _STDERR_BYTES)
        proc.stderr.close()
    finally:
        for fd in (spec_fd, report_r, report_w):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    status, detail = verdict.result_fields(report, stderr, proc.returncode, timed_out, limits,
                                           check.solution, check.test, check.entry_point)
    return SandboxResult(status, detail, backend)


