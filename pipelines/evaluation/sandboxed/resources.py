"""Kernel resource limits (setrlimit) for the program, hard and soft alike: it cannot raise them."""

from __future__ import annotations

import resource


def apply(cpu_s: int, memory_mb: int, file_mb: int, processes: int | None) -> None:
    # SIGXCPU at the soft limit (reported as a timeout); SIGKILL at the hard one if it is ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 2))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024, file_mb * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if processes is not None:
        # Counted per uid: only meaningful when the program has a uid of its own (the parent was root).
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
