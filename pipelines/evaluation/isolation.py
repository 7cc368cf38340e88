"""Kernel isolation for one check: the command line that starts the harness in new namespaces.

Two backends, both building the same sandbox:
- bubblewrap (`bwrap`, Debian package `bubblewrap`), preferred;
- util-linux `unshare` with `sandboxed/unshare_mounts.py`, where bwrap is missing (needs Linux
  5.12+ for the recursive read-only remount).

Each puts the program in new network (only a loopback, taken down), PID, IPC, UTS and mount
namespaces; the root filesystem read-only; the directories that may hold data (the project,
home directories, temporary directories, /run, cluster mounts such as /dbfs) hidden behind
empty read-only tmpfs mounts, with the interpreter and the harness bound back read-only and the
check's work directory bound read-write; a fresh /proc and a minimal /dev. Started by root,
they run without a user namespace and the harness becomes a uid of its own; started by another
user, they need unprivileged user namespaces.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
HARNESS_DIR = Path(__file__).resolve().parent / "sandboxed"
HARNESS = HARNESS_DIR / "harness.py"
UNSHARE_MOUNTS = HARNESS_DIR / "unshare_mounts.py"
BACKENDS = ("bwrap", "unshare")

# Hidden whenever they exist: where data and credentials live on a workstation or a cluster
# node (Databricks: /dbfs, /Volumes and /Workspace are FUSE views of the workspace's storage).
ALWAYS_HIDDEN = ("/tmp", "/var/tmp", "/run", "/home", "/root", "/mnt", "/media", "/srv",
                 "/dbfs", "/Volumes", "/Workspace", "/databricks", "/local_disk0")
# Never hidden, nor any directory above them: the program needs the system to run.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/sys", "/dev")
# Root of the initial user namespace keeps these through the setup (the harness drops them all).
_SETUP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_NET_ADMIN")
PATH = "/usr/local/bin:/usr/bin:/bin"
# Where the check's work directory appears inside the namespaces, whatever its host path: directly
# on the hidden /tmp, so that no host directory on the way (say a private 0700 one) is copied in.
WORKDIR_INSIDE = "/tmp/work"


@dataclass(frozen=True)
class Layout:
    """What the program sees of the host's filesystem, besides the read-only root."""

    hidden: tuple[str, ...]  # empty read-only tmpfs over each
    exposed: tuple[str, ...]  # bound back read-only (the interpreter, the harness)
    workdir: str  # on the host; bound read-write on WORKDIR_INSIDE

    def created_dirs(self) -> tuple[str, ...]:
        """The directories the sandbox creates on its tmpfs mounts on the way to an exposed path.

        bubblewrap gives them their host modes; they get 0755 so that the program's uid can pass
        (the binds' own content keeps its modes)."""
        dirs = set()
        for path in self.exposed:
            parent = os.path.dirname(path)
            while parent not in self.hidden and any(_inside(parent, h) for h in self.hidden):
                if not any(_inside(parent, e) for e in self.exposed):
                    dirs.add(parent)
                parent = os.path.dirname(parent)
        return tuple(sorted(dirs, key=len))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def hidden_dirs(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # removed under us: nothing there to hide
        cwd = ""
    candidates = [*ALWAYS_HIDDEN, os.path.expanduser("~"), os.environ.get("HOME", ""), cwd,
                  str(PROJECT_ROOT), tempfile.gettempdir(), *extra]
    dirs = set()
    for candidate in candidates:
        if not candidate or not os.path.isdir(candidate):
            continue
        path = os.path.realpath(candidate)
        if path == "/" or any(_inside(system, path) for system in _SYSTEM):
            continue
        dirs.add(path)
    # A directory inside another hidden one is hidden already.
    return tuple(sorted(d for d in dirs if not any(d != o and _inside(d, o) for o in dirs)))


def interpreter_dirs() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    return tuple(sorted(os.path.realpath(p) for p in paths if p))


def layout(workdir: str, extra_hidden: tuple[str, ...] = ()) -> Layout:
    hidden = hidden_dirs(extra_hidden)
    if "/tmp" not in hidden:
        raise RuntimeError("/tmp must be a directory of its own to hold the check's work directory")
    exposed = [p for p in (*interpreter_dirs(), str(HARNESS_DIR))
               if any(_inside(p, h) for h in hidden)]
    # Outermost first, so that a path inside another is mounted over it.
    return Layout(hidden, tuple(sorted(set(exposed), key=len)), os.path.realpath(workdir))


def program_env(workdir: str) -> dict[str, str]:
    return {"PATH": PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def harness_argv(spec_fd: int, report_fd: int) -> list[str]:
    return [os.path.realpath(sys.executable), "-I", "-B", str(HARNESS), str(spec_fd), str(report_fd)]


def find(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join(filter(None, [os.environ.get("PATH"), PATH, "/usr/sbin:/sbin"])))


def bwrap_command(bwrap: str, lay: Layout, argv: list[str], root: bool) -> list[str]:
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
           "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if root:
        # No user namespace: the harness switches to a uid of its own, which needs these.
        for cap in _SETUP_CAPS:
            cmd += ["--cap-add", cap]
    else:
        # Root of the user namespace (mapped to this user), so that the harness may take the
        # loopback down; with another uid, or with --disable-userns, bwrap nests a second user
        # namespace that holds no capability over the network namespace. The harness then drops
        # every capability, and seccomp refuses new user namespaces.
        cmd += ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "CAP_NET_ADMIN"]
    cmd += ["--clearenv"]
    for key, value in program_env(WORKDIR_INSIDE).items():
        cmd += ["--setenv", key, value]
    cmd += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for path in lay.hidden:
        cmd += ["--tmpfs", path]
    for path in lay.exposed:
        cmd += ["--ro-bind", path, path]
    cmd += ["--bind", lay.workdir, WORKDIR_INSIDE]
    for path in lay.created_dirs():
        cmd += ["--chmod", "0755", path]
    for path in (*lay.hidden, "/dev"):
        cmd += ["--remount-ro", path]  # not recursive: the binds inside keep their own mode
    return cmd + ["--chdir", "/", "--", *argv]  # the harness enters the workdir as its own uid


def unshare_command(unshare: str, lay: Layout, argv: list[str], root: bool) -> list[str]:
    import json

    plan = {"hidden": lay.hidden, "exposed": lay.exposed, "workdir": lay.workdir, "workdir_inside": WORKDIR_INSIDE,
            "argv": argv, "env": program_env(WORKDIR_INSIDE)}
    cmd = [unshare, "--mount", "--net", "--pid", "--ipc", "--uts", "--cgroup", "--fork", "--kill-child",
           "--propagation", "private"]
    if not root:
        cmd += ["--user", "--map-root-user"]
    # -S: the setup needs no site-packages, and skipping site saves a third of its start-up.
    return cmd + ["--", argv[0], "-I", "-S", "-B", str(UNSHARE_MOUNTS), json.dumps(plan)]


def describe(backend: str) -> str:
    """The words the evaluate job's summary uses for a backend."""
    if backend == "weak":
        return ("WEAK: in-process guard only (audit hook, seccomp, rlimits), no kernel isolation: "
                "the program could read the filesystem and reach the network")
    tool = "bubblewrap" if backend == "bwrap" else "unshare"
    return (f"{tool}: new network, PID, IPC, UTS and mount namespaces, read-only root, hidden "
            "project/home/tmp, no capabilities, seccomp, rlimits, audit hook")
