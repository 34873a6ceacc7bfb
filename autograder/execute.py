"""Run a program in the sandbox, one process per submission, and judge its test cells from outside.

The student's cells run in the sandboxed runner. A test cell never does: the judge (this process) runs
its check calls, which send the probe beside the student's code the cases they made and compare its
answers with what they computed themselves. Requests and answers are frames (``course_utils.wire``);
each request carries a fresh random id that its answer must repeat, and an answer that does not (a
frame that is not one, bytes no one asked for, another id) is tampering: the submission stops there.
Answers are capped in size, one by one and in all.

A cell that runs past its time limit, or kills its process (``os._exit``, a segfault, the memory
limit), loses only itself: a fresh process re-runs the cells before it that had run without error and
the notebook goes on. A cell refused by the review is never sent. The notebook as a whole has a time
limit too; cells left when it is reached are reported as not run.
"""

import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from autograder.assemble import Program, Step
from autograder.sandbox import RUNNER, Limits, bwrap, cgroup, environment, sandbox_command
from course_utils.judge import ProbeLost, Tampering, session
from course_utils.wire import LENGTH, WireError, decode, encode

STARTUP_TIMEOUT = 180.0  # seconds for the runner to import torch and IPython on a loaded machine


@dataclass(frozen=True)
class Outcome:
    """What happened to one step. ``status``: ok, error, refused, timeout, crashed, skipped (the
    notebook's time ran out, or it stopped), ``not run`` (hidden tests after failed visible ones),
    tampered (the channel carried what no one asked for), ``over limit`` (answers too large) or written
    (a written answer, never run: graded by hand)."""

    status: str
    ename: str = ""
    evalue: str = ""
    stdout: str = ""
    stderr: str = ""
    finding: bool = False  # a failure the instructor should hear of too (forward changed its weights)
    mistake: str = ""  # what a failed check found: a known mistake's name, or a diagnosis's
    kind: str = ""  # "known", "diagnosed", or "" (nothing named)

    @property
    def ran(self) -> bool:
        return self.status in ("ok", "error")

    def to_dict(self) -> dict:
        return asdict(self)


class RunnerGoneError(Exception):
    """The sandboxed process stopped answering: timed out (``timed_out``) or died."""

    def __init__(self, timed_out: bool, detail: str) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class OverLimitError(Exception):
    """An answer, or the submission's answers together, are larger than the limits allow."""


class Runner:
    """One sandboxed runner process, and the two pipes of requests and answers."""

    def __init__(self, scratch: Path, limits: Limits) -> None:
        self.resources = ExitStack()
        self.limits = limits
        prefix = self.resources.enter_context(cgroup(limits))  # one per process: a clean count
        if bwrap():
            command = prefix + sandbox_command(scratch, limits)
            env, cwd = None, None
        else:
            command, env, cwd = prefix + [sys.executable, str(RUNNER)], environment(limits), scratch
            env["HOME"] = str(scratch)
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.buffer = b""
        self.received = 0
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            hello, _ = self.answer("hello", STARTUP_TIMEOUT)
        except (RunnerGoneError, Tampering, OverLimitError):
            self.close()
            raise
        self.devices = [d for d in hello.get("devices", ["cpu"]) if d in ("cpu", "cuda")] or ["cpu"]

    def exchange(self, meta: dict, tensors: list[torch.Tensor], timeout: float) -> tuple[dict, list]:
        """Send one request, with a fresh id; its answer, which must carry that id."""
        self.unasked()
        request_id = secrets.token_hex(12)
        try:
            self.process.stdin.write(encode({**meta, "id": request_id}, tensors))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise RunnerGoneError(False, self.exit_reason()) from err
        return self.answer(request_id, timeout)

    def run(self, source: str, timeout: float) -> dict:
        """Run one cell of the student's notebook; the runner's answer."""
        answer, _ = self.exchange({"op": "cell", "source": source}, [], timeout)
        return answer

    def unasked(self) -> None:
        """Tampering if the runner wrote anything between an answer and the next request."""
        if self.buffer or self.selector.select(0):
            chunk = self.buffer or os.read(self.process.stdout.fileno(), 1 << 16)
            if chunk:
                raise Tampering(
                    f"the kernel wrote {len(chunk)} bytes to the grader's channel that no one asked for"
                )

    def answer(self, request_id: str, timeout: float) -> tuple[dict, list]:
        """The answer frame to ``request_id``; Tampering for anything else, RunnerGoneError if none comes."""
        deadline = time.monotonic() + timeout
        head = self.read(LENGTH.size, deadline)
        (size,) = LENGTH.unpack(head)
        if size >= 1 << 32:  # no answer is 4 GiB: these are not the length field of a frame
            raise Tampering(f"the grader's channel carried something that is not an answer ({head[:8]!r}...)")
        if size > self.limits.answer_bytes:
            raise OverLimitError(
                f"an answer of {size / 2**20:.0f} MiB is over the limit of "
                f"{self.limits.answer_bytes / 2**20:.0f} MiB (does forward return something huge?)"
            )
        self.received += size
        if self.received > self.limits.answers_bytes:
            raise OverLimitError(
                f"the answers add up to more than {self.limits.answers_bytes / 2**20:.0f} MiB"
            )
        frame = head + self.read(size, deadline)
        try:
            meta, tensors = decode(frame)
        except WireError as err:
            raise Tampering(f"the grader's channel carried something that is not an answer ({err})") from err
        if not isinstance(meta, dict) or meta.get("id") != request_id:
            raise Tampering("the grader's channel carried an answer to a request that was not made")
        self.unasked()
        return meta, tensors

    def read(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                raise RunnerGoneError(True, "no answer in time")
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RunnerGoneError(False, self.exit_reason())
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def exit_reason(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the kernel stopped answering"
        if code < 0 or code > 128:
            number = -code if code < 0 else code - 128
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else number
            hint = " (the memory limit, or killed)" if number == signal.SIGKILL else ""
            return f"the kernel died: signal {name}{hint}"
        return f"the kernel exited with code {code}"

    def close(self) -> None:
        """Kill the process and everything it started; wait until they are gone."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.selector.close()
        for stream in (self.process.stdin, self.process.stdout):
            with suppress(OSError):
                stream.close()
        self.resources.close()


class RunnerTransport:
    """The judge's requests to the probe in a runner, within one test cell's time."""

    def __init__(self, runner: Runner, deadline: float) -> None:
        self.runner, self.deadline = runner, deadline
        self.devices = runner.devices

    def request(self, meta: dict, tensors: list[torch.Tensor]) -> tuple[dict, list[torch.Tensor]]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProbeLost(True, "the test cell ran past its time limit")
        try:
            return self.runner.exchange(meta, tensors, left)
        except RunnerGoneError as gone:
            raise ProbeLost(gone.timed_out, str(gone)) from gone

    def cause(self) -> None:
        return None


def judge(step: Step, runner: Runner, timeout: float) -> Outcome:
    """Run a test step's check calls here, against the probe in ``runner``."""
    transport = RunnerTransport(runner, time.monotonic() + timeout)
    with session(transport):
        for call in step.checks:
            try:
                call.run()
            except AssertionError as failure:
                transport.request({"op": "forget"}, [])
                found = {
                    k: getattr(failure, k, v) for k, v in (("finding", False), ("mistake", ""), ("kind", ""))
                }
                return Outcome("error", "AssertionError", str(failure), **found)
            except (OverLimitError, RunnerGoneError):
                raise
            except Exception as err:  # noqa: BLE001 - a failure of the check itself costs this question, and says so
                return Outcome(
                    "error",
                    "GraderError",
                    f"{call.function} could not judge the answer: {type(err).__name__}: {err}",
                )
            transport.request({"op": "forget"}, [])
    return Outcome("ok")


def execute(program: Program, limits: Limits, cell_timeout: float, notebook_timeout: float) -> list[Outcome]:
    """Run ``program``'s steps in order: the student's in a sandbox, the tests in the judge."""
    steps = program.steps
    outcomes: list[Outcome | None] = [None] * len(steps)
    deadline = time.monotonic() + notebook_timeout
    runner: Runner | None = None
    stopped: Outcome | None = None
    with tempfile.TemporaryDirectory(prefix="autograder-") as scratch:
        os.chmod(scratch, 0o777)
        try:
            for i, step in enumerate(steps):
                left = deadline - time.monotonic()
                if stopped is not None:
                    outcomes[i] = Outcome("skipped", evalue=f"not run: {stopped.evalue}")
                elif step.kind == "written":
                    outcomes[i] = Outcome("written", evalue="a written answer, to grade by hand")
                elif step.refused:
                    outcomes[i] = Outcome("refused", "PolicyViolation", "; ".join(step.refused))
                elif step.kind == "hidden" and outcomes[i - 1] is not None and outcomes[i - 1].status != "ok":
                    outcomes[i] = Outcome(
                        "not run", evalue="the visible checks of this question failed first"
                    )
                elif left <= 0:
                    outcomes[i] = Outcome(
                        "skipped", evalue=f"not run: the notebook's {notebook_timeout:.0f} s ran out"
                    )
                else:
                    try:
                        if runner is None:
                            runner = Runner(Path(scratch), limits)
                            _restore(runner, steps[:i], outcomes[:i], cell_timeout)
                        timeout = min(cell_timeout, left)
                        if step.kind in ("test", "hidden"):
                            outcomes[i] = judge(step, runner, timeout)
                        else:
                            outcomes[i] = _outcome(runner.run(step.source, timeout))
                    except (RunnerGoneError, ProbeLost) as gone:
                        limit = f"ran past its time limit ({min(cell_timeout, left):.0f} s)"
                        outcomes[i] = Outcome(
                            "timeout" if gone.timed_out else "crashed",
                            evalue=limit if gone.timed_out else str(gone),
                        )
                        if runner is not None:
                            runner.close()
                        runner = None
                    except (Tampering, OverLimitError) as stop:
                        status = "tampered" if isinstance(stop, Tampering) else "over limit"
                        outcomes[i] = stopped = Outcome(status, type(stop).__name__, str(stop))
        finally:
            if runner is not None:
                runner.close()
    return [o for o in outcomes if o is not None]


def _restore(runner: Runner, steps: list[Step], outcomes: list, cell_timeout: float) -> None:
    """Re-run, in a fresh process, the cells that had run without error before (tests excepted)."""
    for step, outcome in zip(steps, outcomes, strict=True):
        if outcome is not None and outcome.status == "ok" and step.kind not in ("test", "hidden"):
            runner.run(step.source, cell_timeout)


def _outcome(answer: dict) -> Outcome:
    return Outcome(
        "ok" if answer.get("ok") else "error",
        str(answer.get("ename", "")),
        str(answer.get("evalue", "")),
        str(answer.get("stdout", "")),
        str(answer.get("stderr", "")),
    )
