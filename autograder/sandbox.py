"""Where student code runs: a bubblewrap sandbox with limits, or a loudly announced fallback.

Inside the sandbox the student's process sees, read-only, only the system's libraries, the Python
installation and ``course_utils``; it works in an empty scratch directory, has no network, no
capabilities and no ``/proc`` but ``/proc/cpuinfo`` (so no path leads to its own descriptors, the
grader's channel among them), runs as ``nobody`` in its own user, PID, IPC and UTS namespaces, and dies
with the grader. Memory and the number of processes are capped by a cgroup where the grader may create
one (cgroup v2's ``memory.max`` and ``pids.max``, or v1's controllers), and always by rlimits on address
space, CPU time and file size.
"""

import functools
import os
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import course_utils

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNNER = Path(__file__).with_name("runner.py")
SANDBOX_RUNNER = "/grader/runner.py"
SCRATCH = "/home/student"
ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "nsswitch.conf",
    "localtime",
    "alternatives",
)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's process tree."""

    memory_bytes: int = 4 << 30
    processes: int = 64
    cpu_seconds: int = 600
    file_bytes: int = 64 << 20
    answer_bytes: int = 64 << 20  # one answer of the probe
    answers_bytes: int = 1 << 30  # all the answers of one submission


@functools.cache
def bwrap() -> str | None:
    """The bubblewrap executable, if it can make a sandbox here; None otherwise (or when switched off
    with ``AUTOGRADER_NO_SANDBOX=1``). Containers often forbid the namespaces it needs."""
    if os.environ.get("AUTOGRADER_NO_SANDBOX") == "1" or sys.platform != "linux":
        return None
    path = shutil.which("bwrap")
    if path is None:
        return None
    trial = [path, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    try:
        works = subprocess.run(trial, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    return path if works else None


def warn_unsandboxed() -> None:
    warnings.warn(
        "bubblewrap (`bwrap`) is not available or cannot create namespaces here: student code will run "
        "WITHOUT a sandbox, with your user's rights, access to your files and the network. Install it "
        "(Debian/Ubuntu: `apt-get install bubblewrap`) before grading submissions you do not trust.",
        RuntimeWarning,
        stacklevel=2,
    )


def python_paths() -> list[Path]:
    """What the runner's interpreter needs to read: the installation, the venv, course_utils."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    paths.add(Path(course_utils.__file__).resolve().parent)
    return sorted(paths)


def environment(limits: Limits) -> dict[str, str]:
    """The runner's whole environment: nothing of the grader's is passed on."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": SCRATCH,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "NBGRADER_EXECUTION": "autograde",
        "COURSE_QUICK": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "GRADER_MEMORY": str(limits.memory_bytes),
        "GRADER_CPU": str(limits.cpu_seconds),
        "GRADER_FILE_SIZE": str(limits.file_bytes),
    }


def sandbox_command(scratch: Path, limits: Limits) -> list[str]:
    """The bubblewrap command that starts the runner with ``scratch`` as its working directory."""
    command = [
        bwrap() or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid", "65534",
        "--gid", "65534",
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    command += ["--ro-bind-try", "/proc/cpuinfo", "/proc/cpuinfo"]  # PyTorch's CPU detection; no /proc/self
    for name in ETC:  # only what the dynamic linker and Python read: no shadow, no keys
        command += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32"):
        path = Path("/") / name
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            command += ["--ro-bind", str(path), str(path)]
    for path in python_paths():
        command += ["--ro-bind", str(path), str(path)]
    command += ["--ro-bind", str(RUNNER), SANDBOX_RUNNER, "--bind", str(scratch), SCRATCH, "--chdir", SCRATCH]
    for key, value in environment(limits).items():
        command += ["--setenv", key, value]
    return [*command, sys.executable, SANDBOX_RUNNER]


def own_cgroup() -> str:
    """This process's cgroup v2 path (``/`` in a fresh namespace), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


@functools.cache
def unified_parent() -> Path | None:
    """The cgroup v2 group under which the grader can make one group per runner, memory and pids
    controllers enabled for its children; None where the host has no such v2 hierarchy.

    cgroup v2 lets a group hand controllers to its children only while it holds no process itself; where
    the grader's own group holds processes, they move into a leaf of it first (as systemd does).
    """
    if not (CGROUP_ROOT / "cgroup.controllers").is_file():
        return None
    parent = CGROUP_ROOT / own_cgroup().lstrip("/")
    wanted = {"memory", "pids"}
    try:
        if not wanted <= set((parent / "cgroup.controllers").read_text().split()):
            return None
        if wanted <= set((parent / "cgroup.subtree_control").read_text().split()):
            return parent
        try:
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
        except OSError:  # the group holds processes: move them into a leaf, then enable the controllers
            leaf = parent / "vit-autograder-grader"
            leaf.mkdir(exist_ok=True)
            for pid in (parent / "cgroup.procs").read_text().split():
                with suppress(OSError):
                    (leaf / "cgroup.procs").write_text(pid)
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError:
        return None
    return parent


@contextmanager
def cgroup(limits: Limits) -> Iterator[list[str]]:
    """A fresh cgroup capping memory and processes; yields the command prefix that enters it.

    cgroup v2 (``memory.max``, ``pids.max``) where the host has it, v1's memory and pids controllers
    otherwise. Yields an empty prefix where no cgroup can be created (then only the rlimits apply). On
    exit every process still in the group is killed and the group removed.
    """
    name = f"vit-autograder-{uuid.uuid4().hex[:12]}"
    parent = unified_parent()
    if parent is not None:
        wanted = [(parent / name, {"memory.max": limits.memory_bytes, "pids.max": limits.processes})]
    else:
        wanted = [
            (CGROUP_ROOT / "pids" / name, {"pids.max": limits.processes}),
            (CGROUP_ROOT / "memory" / name, {"memory.limit_in_bytes": limits.memory_bytes}),
        ]
    groups = []
    for path, settings in wanted:
        try:
            path.mkdir()
            for file, value in settings.items():
                (path / file).write_text(str(value))
            groups.append(path)
        except OSError:
            if path.exists():
                _remove_cgroup(path)
    enter = "".join(f'echo $$ > "{p}/cgroup.procs" && ' for p in groups)
    try:
        yield ["sh", "-c", enter + 'exec "$@"', "sh"] if groups else []
    finally:
        for path in groups:
            _remove_cgroup(path)


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):
        try:
            if (path / "cgroup.kill").exists():
                (path / "cgroup.kill").write_text("1")
            for pid in (path / "cgroup.procs").read_text().split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
