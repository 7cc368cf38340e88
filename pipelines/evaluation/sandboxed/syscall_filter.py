"""A seccomp filter, installed by the harness just before the program runs.

Audit hooks see only what Python reports (`_posixsubprocess.fork_exec` reports nothing), so the
kernel refuses what a check never needs, whatever route the program takes: new processes
(fork, vfork, execve, clone without CLONE_THREAD; threads still work), sockets, signals,
tracing, namespaces and mounts, kernel keyrings, BPF, io_uring (its operations would bypass this
filter) and module loading. Refused calls fail with EPERM; a call made through another
architecture's syscall table (x32, i386) kills the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# Denied syscalls, by name, and the numbers of each supported architecture
# (asm/unistd_64.h for x86_64, asm-generic/unistd.h for aarch64).
_DENIED = {
    # name: (x86_64, aarch64); None: the call does not exist there
    "fork": (57, None), "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281),
    "socket": (41, 198),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424),
    "pidfd_getfd": (438, 438),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142),
    "swapon": (167, 224), "swapoff": (168, 225), "iopl": (172, None), "ioperm": (173, None),
}
_CLONE = {"x86_64": 56, "aarch64": 220}
_CLONE3 = 435  # both: its flags sit in memory the filter cannot read, so it answers ENOSYS
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_CLONE_THREAD = 0x00010000

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class SeccompUnavailable(RuntimeError):
    """The filter cannot be built or installed here."""


def architecture() -> str:
    arch = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def denied_syscalls(arch: str | None = None) -> dict[str, int]:
    arch = arch or architecture()
    if arch not in _AUDIT_ARCH:
        raise SeccompUnavailable(f"no seccomp syscall table for {arch} (x86_64 and aarch64 are supported)")
    column = 0 if arch == "x86_64" else 1
    return {name: numbers[column] for name, numbers in _DENIED.items() if numbers[column] is not None}


def build_filter(arch: str | None = None) -> bytes:
    """The classic-BPF program, as the bytes of a sock_filter array."""
    arch = arch or architecture()
    denied = denied_syscalls(arch)

    def ins(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)

    eperm = ins(_RET, _RET_ERRNO | errno.EPERM)
    program = [
        ins(_LD_W_ABS, 4),  # seccomp_data.arch
        ins(_JEQ, _AUDIT_ARCH[arch], 1, 0),
        ins(_RET, _RET_KILL_PROCESS),
        ins(_LD_W_ABS, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":  # x32 numbers would reach the same kernel code under other numbers
        program += [ins(_JGE, _X32_SYSCALL_BIT, 0, 1), eperm]
    for number in sorted(set(denied.values())):
        program += [ins(_JEQ, number, 0, 1), eperm]
    program += [
        ins(_JEQ, _CLONE3, 0, 1), ins(_RET, _RET_ERRNO | errno.ENOSYS),  # libc falls back to clone
        ins(_JEQ, _CLONE[arch], 0, 3),
        ins(_LD_W_ABS, 16),  # low 32 bits of args[0]: the clone flags
        ins(_JSET, _CLONE_THREAD, 1, 0),
        eperm,
        ins(_RET, _RET_ALLOW),
    ]
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Install the filter on the calling thread (call it while the process has one thread)."""
    program = build_filter()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise SeccompUnavailable(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise SeccompUnavailable(f"prctl(PR_SET_SECCOMP): {os.strerror(ctypes.get_errno())} (kernel without seccomp?)")
