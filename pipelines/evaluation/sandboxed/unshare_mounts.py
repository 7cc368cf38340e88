"""The unshare backend's mount setup, run as root of the new namespaces before the harness.

    unshare --mount --net --pid --ipc --uts --cgroup --fork --kill-child --propagation private \
        [--user --map-root-user] -- python -I -S -B unshare_mounts.py PLAN_JSON

Builds what bubblewrap builds: a minimal /dev, an empty tmpfs over each hidden directory, the
exposed directories (interpreter, harness) and the work directory bound back, a fresh /proc,
then every mount read-only (mount_setattr, Linux 5.12+) except the work directory. Then it
stays as PID 1 of the namespace, reaping, and exits with the harness's status (128 + signal
when killed); when it dies the kernel kills everything left in the namespace.
"""

import ctypes
import json
import os
import sys

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = 0x1, 0x2
_SYS_MOUNT_SETATTR = 442  # x86_64 and aarch64 alike
_DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount(source, target, fstype, flags, data=None):
    def b(s):
        return None if s is None else os.fsencode(s)

    if _libc.mount(b(source), b(target), b(fstype), flags, b(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source} on {target}: {os.strerror(err)}")


def _set_attr(path, attr_set, attr_clr, recursive):
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = _AT_RECURSIVE if recursive else 0
    if _libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, os.fsencode(path), flags, ctypes.byref(attr),
                     ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        hint = " (Linux 5.12+ is needed: install bubblewrap instead)" if err == 38 else ""
        raise OSError(err, f"mount_setattr {path}: {os.strerror(err)}{hint}")


def _bind(fd, target, directory=True):
    if directory:
        os.makedirs(target, exist_ok=True)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)


def set_up(plan):
    hostname = b"sandbox"
    if _libc.sethostname(hostname, len(hostname)) != 0:  # the UTS namespace starts as the host's copy
        raise OSError(ctypes.get_errno(), "sethostname")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    # Opened before anything hides them: bound back from these descriptors.
    keep = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in plan["exposed"]}
    workdir = os.open(plan["workdir"], os.O_PATH | os.O_CLOEXEC)
    devices = {name: os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC) for name in _DEVICES}

    _mount("tmpfs", "/dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in devices.items():
        _bind(fd, f"/dev/{name}", directory=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    for path in plan["hidden"]:
        _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
    for path, fd in keep.items():
        _bind(fd, path)
    _bind(workdir, plan["workdir_inside"])
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _set_attr("/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, recursive=True)
    _set_attr(plan["workdir_inside"], 0, _MOUNT_ATTR_RDONLY, recursive=False)
    for fd in (*keep.values(), workdir, *devices.values()):
        os.close(fd)


def reap(argv, env):
    child = os.fork()
    if child == 0:
        os.execve(argv[0], argv, env)
    # PID 1 keeps no descriptor of the parent's but stderr: the report pipe closes with the harness.
    os.closerange(3, 1 << 16)
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def main():
    plan = json.loads(sys.argv[1])
    try:
        set_up(plan)
    except OSError as e:
        print(f"sandbox (unshare): {e.strerror or e}", file=sys.stderr)
        return 125
    return reap(plan["argv"], plan["env"])


if __name__ == "__main__":
    sys.exit(main())
