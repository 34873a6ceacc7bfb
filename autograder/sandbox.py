"""Where student code runs: a bubblewrap sandbox with limits, or a loudly announced fallback.

Inside the sandbox the student's process sees, read-only, only the system's libraries, the Python
installation and ``course_utils``; it works in an empty scratch directory, has no network and no
capabilities, runs as ``nobody`` in its own user, PID, IPC and UTS namespaces, and dies with the
grader. Memory and the number of processes are capped by a cgroup where the grader may create one
(as root on Linux), and always by rlimits on address space, CPU time and file size.
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
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
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


@contextmanager
def cgroup(limits: Limits) -> Iterator[list[str]]:
    """A fresh cgroup capping memory and processes; yields the command prefix that enters it.

    Yields an empty prefix where cgroups cannot be created (then only the rlimits apply). On exit
    every process still in the group is killed and the group removed.
    """
    name = f"vit-autograder-{uuid.uuid4().hex[:12]}"
    groups = {}
    for controller, settings in (
        ("pids", {"pids.max": limits.processes}),
        ("memory", {"memory.limit_in_bytes": limits.memory_bytes}),
    ):
        path = CGROUP_ROOT / controller / name
        try:
            path.mkdir()
            for file, value in settings.items():
                (path / file).write_text(str(value))
            groups[controller] = path
        except OSError:
            if path.exists():
                path.rmdir()
    enter = "".join(f'echo $$ > "{p}/cgroup.procs" && ' for p in groups.values())
    try:
        yield ["sh", "-c", enter + 'exec "$@"', "sh"] if groups else []
    finally:
        for path in groups.values():
            _remove_cgroup(path)


def _remove_cgroup(path: Path) -> None:
    for _ in range(50):
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
