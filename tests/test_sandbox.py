"""Each claim of the threat model about the sandbox, tested with code the policy would have refused.

The cells here are sent to the sandbox directly (``refused`` left empty), as if a student had found a
way past the static review: what they can reach then is what the sandbox allows.
"""

import os
import socket
import textwrap
from pathlib import Path

import pytest

from autograder.assemble import Program, Step
from autograder.execute import execute
from autograder.sandbox import CGROUP_ROOT, Limits, bwrap, unified_parent
from tests.notebook_kernel import ROOT

pytestmark = pytest.mark.skipif(
    bwrap() is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
LIMITS = Limits(memory_bytes=2 << 30, processes=32, file_bytes=8 << 20)


def probe(name: str, code: str) -> Step:
    return Step("extra", name, textwrap.dedent(code))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """One hostile notebook, run once; each test reads the outcome of its own cell."""
    other = tmp_path_factory.mktemp("other_student")
    (other / "secret.ipynb").write_text("another student's work")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    os.environ["GRADER_SECRET_CANARY"] = "do-not-leak"
    hidden = ["/etc/shadow", "/etc/ssh", "/root/.ssh", "/root/.bash_history"] + [
        str(p) for p in (ROOT / "solutions", ROOT / "notebooks", ROOT / ".git", ROOT / "autograder", other)
    ]
    shown = f"sorted(os.listdir({str(ROOT)!r}))"
    steps = [
        probe("define", "kept = 41"),
        probe(
            "whoami",
            """
            import os, socket
            assert os.getuid() == 65534, os.getuid()
            try:
                socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            except PermissionError:
                pass
            else:
                raise AssertionError("a raw socket: the process holds CAP_NET_RAW")
            try:
                os.chown("/home/student", 0, 0)
            except OSError:  # EPERM, or EINVAL: root is not even mapped in the sandbox's user namespace
                pass
            else:
                raise AssertionError("chown to root: the process holds CAP_CHOWN")
            """,
        ),
        probe(
            "files",
            f"import os\nvisible = [p for p in {hidden!r} if os.path.exists(p)]\nassert not visible, visible",
        ),
        probe("repository", f"import os\nassert set({shown}) <= {{'course_utils', '.venv'}}, {shown}"),
        probe("writes", "open('/usr/lib/x', 'w')"),
        probe(
            "scratch", "open('mine.txt', 'w').write('ok')\nimport os\nassert os.getcwd() == '/home/student'"
        ),
        probe("internet", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)"),
        probe("loopback", f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"),
        probe(
            "processes",
            """
            import os
            assert os.getpid() < 10, f"pid {os.getpid()}: not the sandbox's own PID namespace"
            paths = ("/proc/self", "/proc/1", "/proc/self/fd/1", "/dev/fd/3", "/dev/stdout")
            reachable = [p for p in paths if os.path.exists(p)]
            assert not reachable, reachable
            assert os.listdir("/proc") == ["cpuinfo"], os.listdir("/proc")
            """,
        ),
        probe("environment", "import os\nassert 'GRADER_SECRET_CANARY' not in os.environ, 'leaked'"),
        probe("memory", "block = bytearray(3 << 30)"),
        probe("file_size", "open('big.bin', 'wb').write(b'0' * (16 << 20))"),
        probe(
            "fork_bomb",
            """
            import os, time
            children = 0
            try:
                for _ in range(200):
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                    children += 1
            finally:
                print(children)
            """,
        ),
        probe("exit", "import os\nos._exit(3)"),
        probe("restored", "assert kept == 41"),
        probe("segfault", "import ctypes\nctypes.string_at(0)"),
        probe("after_segfault", "assert kept == 41"),
        probe("loop", "while True:\n    pass"),
        probe("after_loop", "assert kept == 41"),
    ]
    try:
        results = execute(Program(steps), LIMITS, cell_timeout=8, notebook_timeout=300)
    finally:
        listener.close()
        del os.environ["GRADER_SECRET_CANARY"]
    return {step.cell_id: outcome for step, outcome in zip(steps, results, strict=True)}


def test_runs_as_nobody_without_capabilities(outcomes):
    assert outcomes["whoami"].status == "ok", outcomes["whoami"].evalue


def test_sees_neither_solutions_nor_other_submissions_nor_the_repository(outcomes):
    assert outcomes["files"].status == "ok", f"visible in the sandbox: {outcomes['files'].evalue}"
    assert outcomes["repository"].status == "ok", f"the repository shows {outcomes['repository'].evalue}"


def test_system_and_python_are_read_only_and_scratch_is_writable(outcomes):
    assert outcomes["writes"].status == "error" and "Read-only" in outcomes["writes"].evalue
    assert outcomes["scratch"].status == "ok", outcomes["scratch"].evalue


def test_no_network_not_even_the_graders_loopback(outcomes):
    for name in ("internet", "loopback"):
        assert outcomes[name].status == "error", f"{name}: connected"
        assert outcomes[name].ename in ("OSError", "ConnectionRefusedError", "TimeoutError"), outcomes[name]


def test_own_process_namespace_no_proc_and_a_clean_environment(outcomes):
    assert outcomes["processes"].status == "ok", outcomes["processes"].evalue
    assert outcomes["environment"].status == "ok", "the grader's environment reached the sandbox"


def test_memory_and_file_size_are_capped(outcomes):
    assert outcomes["memory"].ename == "MemoryError"
    assert outcomes["file_size"].status == "error" and "too large" in outcomes["file_size"].evalue


@pytest.mark.skipif(
    unified_parent() is None and not os.access(CGROUP_ROOT / "pids", os.W_OK),
    reason="no cgroup can be created here (v2 with memory and pids, or v1's pids controller)",
)
def test_fork_storm_is_capped_by_the_cgroup(outcomes):
    fork = outcomes["fork_bomb"]
    assert fork.status == "error" and fork.ename == "BlockingIOError", fork
    assert int(fork.stdout.strip()) < LIMITS.processes


def test_a_dead_or_stuck_kernel_costs_only_its_cell(outcomes):
    assert (outcomes["exit"].status, outcomes["exit"].evalue) == ("crashed", "the kernel exited with code 3")
    assert outcomes["segfault"].status == "crashed" and "SIGSEGV" in outcomes["segfault"].evalue
    assert outcomes["loop"].status == "timeout"
    for name in ("restored", "after_segfault", "after_loop"):
        assert outcomes[name].status == "ok", (
            f"{name}: earlier cells were not re-run: {outcomes[name].evalue}"
        )


def test_the_notebook_time_limit_stops_the_rest(tmp_path):
    steps = [probe("slow", "import time\ntime.sleep(3)"), probe("late", "x = 1")]
    results = execute(Program(steps), LIMITS, cell_timeout=10, notebook_timeout=2)
    assert [o.status for o in results] == ["timeout", "skipped"]
    assert Path(tmp_path).exists()


def test_cgroup_v2_limits_are_written_where_the_host_has_it(tmp_path, monkeypatch):
    """On a cgroup v2 host (here a copy of its files), each runner gets a group under the grader's own,
    with memory.max and pids.max; the grader's group hands the controllers down."""
    from autograder import sandbox

    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(sandbox, "own_cgroup", lambda: "/")
    removed = []
    monkeypatch.setattr(sandbox, "_remove_cgroup", removed.append)
    sandbox.unified_parent.cache_clear()
    try:
        with sandbox.cgroup(LIMITS) as prefix:
            (group,) = [p for p in tmp_path.iterdir() if p.name.startswith("vit-autograder-")]
            assert (group / "memory.max").read_text() == str(LIMITS.memory_bytes)
            assert (group / "pids.max").read_text() == str(LIMITS.processes)
            assert f"{group}/cgroup.procs" in prefix[2]
        assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids"
        assert removed == [group]
    finally:
        sandbox.unified_parent.cache_clear()
