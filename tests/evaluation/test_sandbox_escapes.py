"""Escape attempts against the evaluation sandbox: each must fail and leave no trace.

Every attempt runs under several layer sets, so that each layer is shown to hold on its own:
`all` (namespaces, seccomp, audit hook: what runs in production), `kernel` (the audit hook
off: what still holds when a route raises no audit event) and `namespaces` (the seccomp filter
off too: containment by the namespaces, the read-only mounts and the uid alone). Under `all` and
`kernel` the attempt itself must raise; under `namespaces` a process may start, but it stays in
the sandbox: no file, connection, signal or process of it reaches the host.
"""

from __future__ import annotations

import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines.evaluation import sandbox
from pipelines.evaluation.sandbox import (
    PROJECT_ROOT,
    SANDBOX_UID_BASE,
    SANDBOX_UID_RANGE,
    Check,
    SandboxLimits,
    SandboxSettings,
    result_json,
    run_check,
)

pytestmark = pytest.mark.slow  # the sandbox matrix: every escape on every backend

LIMITS = SandboxLimits(timeout_s=6, cpu_s=4, memory_mb=512)
# (backend, layers): bwrap in each layer set, unshare (the fallback) in the two kernel ones.
LAYERS = {"all": {}, "kernel": {"audit_hook": False}, "namespaces": {"audit_hook": False, "seccomp": False}}
MODES = [("bwrap", "all"), ("bwrap", "kernel"), ("bwrap", "namespaces"), ("unshare", "kernel"),
         ("unshare", "namespaces")]
MODE_IDS = [f"{b}-{layer}" for b, layer in MODES]
# The raw syscall numbers a ctypes attempt uses (clone with SIGCHLD only: a fork).
CLONE_NR = {"x86_64": 56, "aarch64": 220}.get(platform.machine())


@pytest.fixture(scope="module", autouse=True)
def kernel_backends():
    for backend in ("bwrap", "unshare"):
        problem = sandbox.probe(backend)
        assert problem is None, (
            f"the {backend} backend does not work here ({problem}): escape tests need it "
            "(apt-get install bubblewrap; root, or user namespaces allowed)"
        )


def sandbox_processes() -> list[int]:
    """Processes on the host running as a sandbox uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_RANGE:
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def leaves_nothing_behind(tmp_path, monkeypatch):
    """Every run's work directory is removed and none of its processes outlives it."""
    workdirs = tmp_path / "workdirs"
    workdirs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(workdirs))
    yield
    assert list(workdirs.iterdir()) == []
    deadline = time.time() + 3
    while sandbox_processes() and time.time() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []


def run(program: str, mode, **check) -> sandbox.SandboxResult:
    backend, layer = mode
    result = run_check(Check(program, **check), LIMITS, SandboxSettings(backend=backend, **LAYERS[layer]))
    assert result.sandbox == backend
    return result


def raised(result, names) -> bool:
    """The run failed with one of these exceptions, raised by the program itself."""
    return result.status == "failed" and any(
        result.detail == f"{name} in the solution, line {line}" for name in names for line in range(1, 40)
    )


def assert_attempt_failed(result, mode, names):
    if mode[1] != "namespaces":
        assert raised(result, names), result


@pytest.fixture
def marker(tmp_path):
    """A host path that an escaped process would create."""
    path = tmp_path / f"escaped-{secrets.token_hex(4)}"
    yield path
    assert not path.exists(), f"{path} was written from inside the sandbox"


# --- starting a process, by every route --------------------------------------------------------

def _process_routes(cmd: str) -> dict[str, tuple[str, set[str]]]:
    sh = f'["/bin/sh", "-c", {cmd!r}]'
    return {
        "subprocess": (f"import subprocess\nsubprocess.run({sh})", {"PermissionError"}),
        "os.system": (f"import os\nassert os.system({cmd!r}) == 0", {"PermissionError", "AssertionError"}),
        "os.posix_spawn": (f"import os\nos.waitpid(os.posix_spawn('/bin/sh', {sh}, {{}}), 0)", {"PermissionError"}),
        "os.fork": (
            f"import os\npid = os.fork()\nif pid == 0:\n    os.execv('/bin/sh', {sh})\nos.waitpid(pid, 0)",
            {"PermissionError"},
        ),
        "os.execv in place": (f"import os\nos.execv('/bin/sh', {sh})", {"PermissionError"}),
        "pty": (f"import pty\npty.spawn({sh})", {"PermissionError", "FileNotFoundError", "OSError"}),
        "multiprocessing fork": (
            f"import multiprocessing, os\np = multiprocessing.get_context('fork').Process(target=os.system, "
            f"args=({cmd!r},))\np.start()\np.join()",
            {"PermissionError"},
        ),
        "multiprocessing spawn": (
            f"import multiprocessing, os\np = multiprocessing.get_context('spawn').Process(target=os.system, "
            f"args=({cmd!r},))\np.start()\np.join()",
            {"PermissionError", "OSError"},
        ),
        # The route of the report: no audit event at all, so only the kernel can refuse it.
        "_posixsubprocess.fork_exec": (
            "import _posixsubprocess, os, subprocess\nr, w = os.pipe()\n"
            f"pid = _posixsubprocess.fork_exec({sh}, [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, "
            "r, w, False, False, -1, None, None, None, -1, None, subprocess._USE_VFORK)\nos.waitpid(pid, 0)",
            {"PermissionError"},
        ),
        "ctypes raw clone": (
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
            f"pid = libc.syscall({CLONE_NR}, 17, 0, 0, 0, 0)\nif pid == 0:\n    os.execv('/bin/sh', {sh})\n"
            "if pid < 0:\n    raise OSError(ctypes.get_errno(), 'clone')\nos.waitpid(pid, 0)",
            {"PermissionError"},
        ),
    }


PROCESS_ROUTES = list(_process_routes("true"))


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("route", PROCESS_ROUTES)
def test_starting_a_process_fails(route, mode, marker):
    program, names = _process_routes(f"echo escaped > {marker}; echo escaped > /tmp/{marker.name}")[route]
    result = run(program, mode)
    assert_attempt_failed(result, mode, names)
    assert not Path("/tmp", marker.name).exists()


@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_a_process_started_without_seccomp_stays_inside(backend, marker):
    # The report's escape, with the audit hook and seccomp off: the shell does start, and
    # writes where the program may (its work directory), but nothing of it reaches the host.
    cmd = f"echo inside > started; echo escaped > {marker}; echo escaped > /tmp/{marker.name}"
    program = _process_routes(cmd)["_posixsubprocess.fork_exec"][0] + "\nassert open('started').read() == 'inside\\n'"
    result = run(program, (backend, "namespaces"))
    assert result.passed, result
    assert not Path("/tmp", marker.name).exists()


# --- the network --------------------------------------------------------------------------------

@pytest.fixture
def listeners(tmp_path):
    """TCP, UDP and Unix listeners on the host; none may hear from the sandbox."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_path = str(tmp_path / "listener.sock")
    unix.bind(unix_path)
    unix.listen()
    for s in (tcp, udp, unix):
        s.setblocking(False)
    yield {"tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1], "unix": unix_path}
    for s in (tcp, unix):
        with pytest.raises(BlockingIOError):
            s.accept()
    with pytest.raises(BlockingIOError):
        udp.recvfrom(64)
    for s in (tcp, udp, unix):
        s.close()


NETWORK_ATTEMPTS = {
    "tcp": ("import socket\ns = socket.create_connection(('127.0.0.1', {tcp}), timeout=2)\ns.sendall(b'escaped')",
            {"PermissionError", "OSError", "ConnectionRefusedError"}),
    "raw _socket": ("import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
                    "s.settimeout(2)\ns.connect(('127.0.0.1', {tcp}))", {"PermissionError", "OSError",
                                                                           "ConnectionRefusedError"}),
    "udp": ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'escaped', ('127.0.0.1', {udp}))", {"PermissionError", "OSError"}),
    "unix socket": ("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix!r})",
                    {"PermissionError", "FileNotFoundError"}),
}


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("attempt", list(NETWORK_ATTEMPTS))
def test_reaching_the_host_network_fails(attempt, mode, listeners):
    program, names = NETWORK_ATTEMPTS[attempt]
    result = run(program.format(**listeners), mode)
    # Refused by the hook or by seccomp. With both off, the namespace's loopback is down and is its
    # own: a connection times out or is unreachable, a datagram goes nowhere (the listeners check it).
    assert_attempt_failed(result, mode, names)


def test_the_network_namespace_has_only_a_loopback_and_it_is_down():
    # With seccomp off, so that the program may open the socket that asks.
    program = (
        "import fcntl, socket, struct\n"
        "assert [name for _, name in socket.if_nameindex()] == ['lo']\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "flags = struct.unpack('16sh14x', fcntl.ioctl(s, 0x8913, struct.pack('16sh14x', b'lo', 0)))[1]\n"
        "assert not flags & 1\n"
    )
    for backend in ("bwrap", "unshare"):
        assert run(program, (backend, "namespaces")).passed


# --- files --------------------------------------------------------------------------------------

def _write_targets(tmp_path: Path, name: str) -> list[Path]:
    return [tmp_path / name, Path("/tmp") / name, PROJECT_ROOT / name, Path.home() / name, Path("/etc") / name,
            Path("/var/lib") / name]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_writing_outside_the_work_directory_fails(mode, tmp_path):
    name = f"escaped-{secrets.token_hex(4)}"
    targets = _write_targets(tmp_path, name)
    try:
        for target in targets:
            result = run(f"open({str(target)!r}, 'w').write('escaped')", mode)
            assert raised(result, {"PermissionError", "OSError", "FileNotFoundError"}), (target, result)
            assert not target.exists()
        setup = (PROJECT_ROOT / "setup.py").read_bytes()
        result = run(f"import os\nos.remove({str(PROJECT_ROOT / 'setup.py')!r})", mode)
        assert raised(result, {"PermissionError", "OSError", "FileNotFoundError"}), result
        assert (PROJECT_ROOT / "setup.py").read_bytes() == setup
    finally:
        for target in targets:
            if target.exists():
                target.unlink()


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_the_work_directory_is_writable_and_private(mode):
    program = (
        "import os\nopen('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
        "assert os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR']\n"
    )
    assert run(program, mode).passed


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_reading_the_project_fails(mode):
    setup = str(PROJECT_ROOT / "setup.py")
    for program in (f"raise ValueError(open({setup!r}).read())",
                    f"raise ValueError(open('/proc/1/root' + {setup!r}).read())",
                    f"import os\nraise ValueError(os.listdir({str(PROJECT_ROOT)!r} + '/tests'))"):
        result = run(program, mode)
        assert raised(result, {"PermissionError", "FileNotFoundError"}), (program, result)
        assert "find_packages" not in result_json(result) and "test_" not in result_json(result)


@pytest.fixture
def canaries(tmp_path):
    """Secret files planted where the sandbox hides them: the test's tmp dir, home, the project."""
    token = f"CANARY-{secrets.token_hex(8)}"
    paths = [tmp_path / "canary.txt", Path.home() / f".sandbox-canary-{token}",
             PROJECT_ROOT / f"sandbox-canary-{token}.txt"]
    for path in paths:
        path.write_text(token)
    yield token, paths
    for path in paths:
        path.unlink()


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_reading_a_canary_outside_the_work_directory_fails(mode, canaries):
    token, paths = canaries
    for path in paths:
        for program in (
            f"raise ValueError(open({str(path)!r}).read())",
            f"data = open({str(path)!r}).read()\nprint(data)\nimport sys\nsys.stderr.write(data)\nassert False, data",
        ):
            result = run(program, mode)
            assert raised(result, {"PermissionError", "FileNotFoundError"}), (path, result)
            assert token not in result_json(result)


# --- nothing the program holds reaches the stored result ----------------------------------------

SECRET = "SECRET-" + "7f3a9c" * 3
LEAKS = {
    "exception message": f"raise ValueError({SECRET!r})",
    "assertion message": f"assert False, {SECRET!r}",
    "key error": f"{{}}[{SECRET!r}]",
    "exit message": f"raise SystemExit({SECRET!r})",
    "exception class named after it": f"raise type({SECRET!r}.replace('-', '_'), (Exception,), {{}})()",
    "syntax error text": f"compile('x = ' + {SECRET!r} + ' +', {SECRET!r}, 'exec')",
    "stdout and stderr": f"import sys\nprint({SECRET!r})\nsys.stderr.write({SECRET!r})\nraise RuntimeError",
    "a forged report": (
        "import os\nfor fd in range(3, 64):\n    try:\n"
        f"        os.write(fd, b'{{\"event\": \"verdict\", \"outcome\": \"raised\", \"exception\": \"{SECRET}\", "
        f"\"where\": \"{SECRET}\", \"line\": \"{SECRET}\"}}\\n')\n"
        "    except OSError:\n        pass\nraise RuntimeError"
    ),
    "a readable system file": "raise ValueError(open('/etc/passwd').read())",
    "a huge exit code": "import os\nos._exit(12345)",
}


@pytest.mark.parametrize("leak", list(LEAKS))
def test_the_result_holds_only_the_verdict(leak):
    result = run(LEAKS[leak], ("bwrap", "all"), test="def check(f):\n    assert f() == 1, 'f() should be 1'\n",
                 entry_point="f")
    stored = result_json(result)
    assert result.status == "failed", result
    assert SECRET not in stored and SECRET.replace("-", "_") not in stored and "root:x:0" not in stored
    assert len(result.detail) <= 200


def test_a_failing_test_line_is_quoted_from_the_trusted_test():
    test = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9, 'squares'\n"
    result = run("def f(x):\n    return 4 if x == 2 else 0\n", ("bwrap", "all"), test=test, entry_point="f")
    assert (result.status, result.detail) == ("failed", "AssertionError at test line 3: assert candidate(3) == 9, 'squares'")
    result = run("def f(x):\n    return x * x\n", ("bwrap", "all"), test=test, entry_point="f")
    assert result.passed


# --- signals --------------------------------------------------------------------------------------

@pytest.fixture
def helper():
    """A process of the host, outside the sandbox, that must survive."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc
    assert proc.poll() is None, "the helper process was killed from inside the sandbox"
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_signalling_processes_outside_fails(mode, helper):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        for program in (
            f"import os, signal\nos.kill({helper.pid}, signal.SIGKILL)",
            f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)",
            f"import os, signal\nos.killpg({os.getpgid(helper.pid)}, signal.SIGKILL)",
            f"import signal, os\nsignal.pidfd_send_signal(os.pidfd_open({helper.pid}), signal.SIGKILL)",
        ):
            result = run(program, mode)
            assert_attempt_failed(result, mode, {"PermissionError", "ProcessLookupError"})
            if mode[1] == "namespaces":  # not even visible: another PID namespace
                assert raised(result, {"PermissionError", "ProcessLookupError"}), (program, result)
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []


# --- exhausting the machine ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_a_fork_bomb_is_bounded(mode):
    started = time.time()
    result = run("import os\nwhile True:\n    os.fork()", mode)
    assert result.status in ("failed", "timeout"), result
    assert_attempt_failed(result, mode, {"PermissionError"})
    assert time.time() - started < LIMITS.timeout_s + 3
    # leaves_nothing_behind checks that no process of it is left


def test_a_thread_bomb_is_bounded():
    result = run("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,)).start()",
                 ("bwrap", "all"))
    assert raised(result, {"RuntimeError", "MemoryError"}), result


# --- what the program sees -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_the_program_runs_unprivileged_in_an_empty_view(backend):
    home = Path.home().resolve()
    # Home and /tmp are empty tmpfs but for the way to what is bound back: the interpreter (a
    # pyenv under home, a virtualenv under /tmp) and the harness (a checkout under either).
    exposed = [Path(p).resolve() for p in (*sandbox.isolation.interpreter_dirs(), str(sandbox.isolation.HARNESS_DIR))]

    def entries_under(root: Path) -> list[str]:
        return sorted({p.relative_to(root).parts[0] for p in exposed if p != root and p.is_relative_to(root)})

    interpreter_entries = entries_under(home)
    tmp_entries = sorted({"work", *entries_under(Path("/tmp").resolve())})
    program = f"""
import os, sys
status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
uid = os.getuid()
assert {SANDBOX_UID_BASE} <= uid < {SANDBOX_UID_BASE + SANDBOX_UID_RANGE}
assert os.getgid() == uid and os.getgroups() == []
for key in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'):
    assert int(status[key], 16) == 0
assert status['NoNewPrivs'].strip() == '1'
assert status['Seccomp'].strip() == '2'
assert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3
assert os.uname().nodename != {platform.node()!r}
assert os.getcwd() == '/tmp/work' and sorted(os.listdir('/tmp')) == {tmp_entries!r}
assert not os.path.isdir('/run') or os.listdir('/run') == []
assert sorted(os.listdir({str(home)!r})) == {interpreter_entries!r}
assert set(os.environ) <= {{'PATH', 'HOME', 'TMPDIR', 'LANG', 'PYTHONDONTWRITEBYTECODE', 'LC_CTYPE', 'PWD'}}
assert os.listdir({str(PROJECT_ROOT)!r}) == ['pipelines']
"""
    result = run(program, (backend, "all"))
    assert result.passed, result


def test_without_kernel_isolation_generated_code_is_refused(monkeypatch):
    monkeypatch.setattr(sandbox.isolation, "find", lambda tool: None)
    sandbox.probe.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable) as refused:
            run_check(Check("pass"), LIMITS, SandboxSettings())
        message = str(refused.value)
        assert "bwrap is not installed" in message and "unshare is not installed" in message
        assert "apt-get install bubblewrap" in message and "--allow-weak-sandbox" in message
        weak = run_check(Check("pass"), LIMITS, SandboxSettings(allow_weak=True))
        assert weak.passed and weak.sandbox == "weak"
    finally:
        sandbox.probe.cache_clear()


def test_weak_mode_still_refuses_processes_and_sockets(marker):
    weak = SandboxSettings(backend="weak", allow_weak=True)
    for program in (_process_routes(f"echo escaped > {marker}")["_posixsubprocess.fork_exec"][0],
                    "import _socket\n_socket.socket()"):
        result = run_check(Check(program), LIMITS, weak)
        assert raised(result, {"PermissionError"}), result


# --- started by an unprivileged user (a cluster whose Python workers are not root) ----------------

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root (to become nobody) and a system python3 that nobody can run")
def test_an_unprivileged_user_gets_the_same_sandbox(tmp_path, listeners):
    # The sandbox's code, copied where nobody can read it, driven by the system interpreter as
    # nobody: the user-namespace path of both backends.
    import shutil

    root = Path(tempfile.mkdtemp(prefix="sandbox-nonroot-", dir="/tmp"))
    try:
        (root / "pipelines").mkdir()
        shutil.copy(PROJECT_ROOT / "pipelines" / "__init__.py", root / "pipelines" / "__init__.py")
        shutil.copytree(PROJECT_ROOT / "pipelines" / "evaluation", root / "pipelines" / "evaluation",
                        ignore=shutil.ignore_patterns("__pycache__"))
        token = f"CANARY-{secrets.token_hex(8)}"
        (root / "canary.txt").write_text(token)  # readable by nobody: only the hiding protects it
        marker = root / "escaped"
        fork_exec = _process_routes(f"echo escaped > {marker}")["_posixsubprocess.fork_exec"][0]
        attempts = {
            "uid": ("import os\nst = dict(l.split(':\\t', 1) for l in open('/proc/self/status') if ':\\t' in l)\n"
                    "assert int(st['CapEff'], 16) == 0 and int(st['CapPrm'], 16) == 0\n"
                    "assert st['NoNewPrivs'].strip() == '1' and st['Seccomp'].strip() == '2'"),
            "fork_exec": fork_exec,
            "tcp": NETWORK_ATTEMPTS["tcp"][0].format(**listeners),
            "write": f"open({str(marker)!r}, 'w').write('escaped')",
            # Each attempt ends normally (passed) if it got through: all must fail.
            "canary": f"open({str(root / 'canary.txt')!r}).read()",
        }
        driver = root / "drive.py"
        driver.write_text(
            f"import json, sys\nsys.path.insert(0, {str(root)!r})\n"
            "from pipelines.evaluation.sandbox import Check, SandboxLimits, SandboxSettings, result_json, run_check\n"
            f"attempts = {attempts!r}\n"
            "for backend in ('bwrap', 'unshare'):\n"
            "    for name, program in attempts.items():\n"
            "        result = run_check(Check(program), SandboxLimits(timeout_s=6), SandboxSettings(backend=backend))\n"
            "        print(json.dumps([backend, name, result_json(result)]))\n"
        )
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        out = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all",
             SYSTEM_PYTHON, "-I", str(driver)],
            cwd="/", capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        import json

        results = {(b, name): json.loads(stored) for b, name, stored in map(json.loads, out.stdout.splitlines())}
        assert len(results) == 10
        for backend in ("bwrap", "unshare"):
            assert results[backend, "uid"]["status"] == "passed", results[backend, "uid"]
            for name in ("fork_exec", "tcp", "write", "canary"):
                assert results[backend, name]["status"] == "failed", (backend, name, results[backend, name])
                assert results[backend, name]["sandbox"] == backend
        assert token not in out.stdout and not marker.exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
