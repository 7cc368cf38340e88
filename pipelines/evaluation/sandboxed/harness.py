"""The check's harness, inside the sandbox: set up the last layers, run the program, report.

    python -I -B harness.py SPEC_FD REPORT_FD

SPEC_FD holds the run's JSON spec (program, test, limits, the uid to become, which layers to
install). The harness drops privileges, applies the rlimits, silences stdio, installs the
seccomp filter and the audit hook, then runs the solution, the test and `check(entry_point)`
in a fresh `__main__` module. It writes JSON lines to REPORT_FD: `started` just before the
program runs, then one `verdict`: passed, or the exception's builtin class name and where it
was raised (solution, test or check, and a line number). No exception message, no output and
no text of the program's making is ever reported: the parent composes the stored detail from
these fields and the trusted test source.
"""

import builtins
import json
import os
import sys
import types

_FILES = {"<solution>": "solution", "<test>": "test", "<check>": "check"}
# Snapshot before the program runs: it can rebind names in builtins, not these objects.
_BUILTIN_EXCEPTIONS = tuple(sorted(
    ((obj, name) for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)),
    key=lambda pair: -len(pair[0].__mro__),  # most derived first: the first match is the nearest builtin
))
_MEMORY_ERROR_VERDICT = b'{"event": "verdict", "outcome": "raised", "exception": "MemoryError", "subclass": false}\n'


def main(argv):
    spec_fd, report_fd = int(argv[1]), int(argv[2])
    write, exit_now = os.write, os._exit
    try:
        spec = _read_spec(spec_fd)
        _set_up(spec)
    except BaseException as e:  # before the program: only our own code's messages
        write(report_fd, (json.dumps({"event": "setup_failed", "error": f"{type(e).__name__}: {e}"[:500]}) + "\n").encode())
        exit_now(3)
    write(report_fd, b'{"event": "started"}\n')
    try:
        verdict = _run(spec)
        line = (json.dumps(verdict) + "\n").encode()
    except MemoryError:
        line = _MEMORY_ERROR_VERDICT
    write(report_fd, line)
    exit_now(0)  # no atexit handler or thread of the program runs after the verdict


def _read_spec(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def _set_up(spec):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    try:
        import audit_guard
        import privileges
        import resources
        import syscall_filter
    finally:
        sys.path.remove(here)
    if spec["loopback_down"]:
        privileges.loopback_down()
    privileges.drop(spec["uid"], spec["gid"])
    os.chdir(spec["workdir"])
    limits = spec["limits"]
    resources.apply(limits["cpu_s"], limits["memory_mb"], limits["file_mb"], limits["processes"])
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the parent reads stderr only when the program never started
        os.dup2(devnull, fd)
    os.close(devnull)
    if spec["seccomp"]:
        syscall_filter.install()
    if spec["audit_hook"]:
        audit_guard.install(spec["hidden"], spec["exposed"], spec["workdir"])


def _run(spec):
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    steps = [("<solution>", spec["solution"]), ("<test>", spec["test"])]
    if spec["entry_point"]:
        steps.append(("<check>", f"check({spec['entry_point']})"))
    try:
        for filename, source in steps:
            exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)
    except BaseException as e:  # the program's or the test's: describe it without its message
        module.__dict__.clear()  # frees what the program held, for a MemoryError's sake
        return _describe(e)
    return {"event": "verdict", "outcome": "passed"}


def _describe(e):
    verdict = {"event": "verdict", "outcome": "raised", "exception": None, "subclass": False}
    try:
        cls = type(e)
        for builtin, name in _BUILTIN_EXCEPTIONS:
            if issubclass(cls, builtin):  # the real MRO: a metaclass cannot answer for a builtin
                verdict["exception"], verdict["subclass"] = name, cls is not builtin
                break
        where = line = None
        tb = BaseException.__dict__["__traceback__"].__get__(e)
        while tb is not None:
            place = _FILES.get(tb.tb_frame.f_code.co_filename)
            if place is not None:
                where, line = place, tb.tb_lineno
            tb = tb.tb_next
        if issubclass(cls, SyntaxError):
            filename = SyntaxError.__dict__["filename"].__get__(e)
            if isinstance(filename, str) and filename in _FILES:
                where, line = _FILES[filename], SyntaxError.__dict__["lineno"].__get__(e)
        if where is not None and type(line) is int:
            verdict["where"], verdict["line"] = where, line
    except Exception:  # noqa: BLE001 - a verdict without a place is still a verdict
        pass
    return verdict


if __name__ == "__main__":
    main(sys.argv)
