"""Leave the sandbox's setup privileges before the program runs.

The sandbox may start the harness as root (bubblewrap or unshare run by root keep CAP_SETUID,
CAP_SETGID and CAP_NET_ADMIN for this step) or as root of a user namespace. The program runs as
a uid of its own with no capability at all: it cannot read root's private files, signal other
users' processes or regain privileges (no_new_privs, and execve is refused by the seccomp filter).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(RuntimeError):
    """Privileges could not be dropped: the program must not run."""


def loopback_down() -> None:
    """Take the network namespace's only interface down (bubblewrap brings `lo` up).

    Called only in a namespace of the sandbox's own: the caller checks that `lo` is the only
    interface, so the host's loopback is never touched.
    """
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        raise PrivilegeError("refusing to touch the loopback of a network namespace that has other interfaces")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags & ~_IFF_UP))


def drop(uid: int | None, gid: int | None) -> None:
    """Become `uid`/`gid` (when root of the initial user namespace) and drop every capability."""
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # clears the permitted and effective capability sets
    _clear_capabilities()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    left = capabilities()
    if any(left.values()):
        raise PrivilegeError(f"capabilities left after dropping them: {left}")


def _clear_capabilities() -> None:
    """capset(all zero): what root of a user namespace still holds goes (ambient caps follow)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    data = (Data * 2)()
    if libc.capset(ctypes.byref(Header(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise PrivilegeError(f"capset: {os.strerror(ctypes.get_errno())}")


def capabilities() -> dict[str, int]:
    """The capability sets of this process, from /proc/self/status."""
    sets = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                sets[key] = int(value, 16)
    return sets
