"""The in-process guard: a Python audit hook, the second layer behind the kernel's.

CPython documents audit hooks as no security boundary (`_posixsubprocess.fork_exec` and
ctypes-free escapes raise no event), so this layer only turns the common routes into clear
PermissionErrors; containment comes from the namespaces and the seccomp filter. With
--allow-weak-sandbox it is the only layer (with the seccomp filter and the rlimits).
Everything the hook reads is bound into its defaults as immutable values, so the program
cannot reconfigure it through module globals.
"""

from __future__ import annotations

import os
import sys

_DENIED_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
    "socket.sendmsg", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "os.fork", "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
    "shutil.rmtree", "os.chdir", "sys.addaudithook", "pty.spawn",
})
_WRITE_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.link",
    "os.symlink", "os.utime",
})


def install(hidden: list[str], exposed: list[str], workdir: str) -> None:
    """Refuse network, processes and signals; reading under `hidden` (except under `exposed`);
    writing anywhere but under `workdir`."""

    def guard(event, args, _denied=_DENIED_EVENTS, _writes=_WRITE_EVENTS,
              _hidden=tuple(os.path.realpath(p) for p in hidden),
              _exposed=tuple(os.path.realpath(p) for p in exposed),
              _workdir=os.path.realpath(workdir), _realpath=os.path.realpath, _fsdecode=os.fsdecode,
              _sep=os.sep, _flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT, _PathLike=os.PathLike):
        if event in _denied or (event.startswith("socket.") and event != "socket.__new__"):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event != "open" and event not in _writes:
            return
        if not args or not isinstance(args[0], (str, bytes, _PathLike)):
            return
        path = _realpath(_fsdecode(args[0]))

        def inside(root):
            return path == root or path.startswith(root.rstrip(_sep) + _sep)

        if any(inside(d) for d in _hidden) and not any(inside(d) for d in _exposed):
            raise PermissionError(f"sandbox: access to {path} is not allowed")
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writing = event != "open" or (isinstance(mode, str) and bool(set(mode) & set("wax+"))) \
            or (isinstance(flags, int) and bool(flags & _flags))
        if writing and not inside(_workdir):
            raise PermissionError(f"sandbox: writing {path} is not allowed")

    sys.addaudithook(guard)
