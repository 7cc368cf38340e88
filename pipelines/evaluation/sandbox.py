"""Run untrusted generated code: a separate process, CPU-time, memory and wall-clock limits, an
empty temporary directory, no network and no access to this project's files.

The child installs a Python audit hook before the program runs. Audit hooks cannot be removed
from Python code, so the program cannot open sockets, start processes, or open files under
the blocked directories, whatever it imports. Resource limits are set by the kernel
(setrlimit) before the interpreter starts, and the whole process group is killed on timeout.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

# Runs in the child before the program: the audit hook that makes the sandbox.
_GUARD = r'''
import os as _os, sys as _sys
_blocked_dirs = tuple(_os.path.realpath(p) for p in {blocked!r})
_workdir = _os.path.realpath({workdir!r})
_write_events = {{"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                 "os.link", "os.symlink", "os.utime"}}
def _inside(path, root):
    return path == root or path.startswith(root + _os.sep)
_denied_events = {{"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
                  "socket.sendto", "socket.sendmsg", "subprocess.Popen", "os.system", "os.exec",
                  "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
                  "ctypes.dlopen", "shutil.rmtree", "os.chdir"}}
def _guard(event, args):
    if event in _denied_events or event.startswith("socket.") and event != "socket.__new__":
        raise PermissionError("sandbox: " + event + " is not allowed")
    if (event == "open" or event in _write_events) and args and isinstance(args[0], (str, bytes, _os.PathLike)):
        path = _os.path.realpath(_os.fsdecode(args[0]))
        if any(_inside(path, d) for d in _blocked_dirs):
            raise PermissionError("sandbox: access to " + path + " is not allowed")
        writing = event != "open" or (len(args) > 1 and isinstance(args[1], str) and set(args[1]) & set("wax+")) \
            or (len(args) > 2 and isinstance(args[2], int) and args[2] & (_os.O_WRONLY | _os.O_RDWR | _os.O_CREAT))
        if writing and not _inside(path, _workdir):
            raise PermissionError("sandbox: writing " + path + " is not allowed")
_sys.addaudithook(_guard)
del _guard
'''


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_mb: int = 1024  # address space
    output_bytes: int = 10_000  # stdout/stderr kept


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | error
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _limit_resources(limits: SandboxLimits):
    def apply():
        os.setsid()  # own process group, so a timeout kills everything it started
        # SIGXCPU at the soft limit (reported as a timeout); SIGKILL at the hard one if it is ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 2))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024 * 1024, 10 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, limits: SandboxLimits = SandboxLimits(), blocked_dirs: list[str] | None = None) -> SandboxResult:
    """Run `program` as a Python script in the sandbox; it passes when it exits 0."""
    blocked = [str(PROJECT_ROOT), *(blocked_dirs or [])]
    with tempfile.TemporaryDirectory(prefix="sandbox-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(_GUARD.format(blocked=blocked, workdir=workdir) + "\n" + program)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "no_proxy": "*", "http_proxy": "http://0.0.0.0:9",
               "https_proxy": "http://0.0.0.0:9"}
        proc = subprocess.Popen(
            [sys.executable, "-I", str(script)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_limit_resources(limits),
        )
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return SandboxResult("timeout", f"killed after {limits.timeout_s}s")
    tail = (err or out)[-limits.output_bytes:].decode("utf-8", "replace").strip()
    if proc.returncode == 0:
        return SandboxResult("passed", "")
    if proc.returncode == -signal.SIGXCPU:
        return SandboxResult("timeout", f"CPU time limit of {limits.cpu_s}s exceeded")
    if proc.returncode < 0:
        return SandboxResult("failed", f"killed by signal {-proc.returncode} ({signal.Signals(-proc.returncode).name})")
    return SandboxResult("failed", tail.splitlines()[-1] if tail else f"exit code {proc.returncode}")


def check_program(problem: dict, completion: str) -> str:
    """The HumanEval check: prompt + completion, the problem's tests, then check(entry_point)."""
    return "\n".join([
        problem["prompt"] + completion,
        "",
        problem["test"],
        "",
        f"check({problem['entry_point']})",
        "",
    ])


def result_json(result: SandboxResult) -> str:
    return json.dumps({"status": result.status, "detail": result.detail})
