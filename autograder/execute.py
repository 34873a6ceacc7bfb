"""Run a program's cells in the sandbox, one process per submission, surviving what student code does.

A cell that runs past its time limit, or kills its process (``os._exit``, a segfault, the memory
limit), loses only itself: a fresh process re-runs the cells before it that had run without error (except
the tests) and the notebook goes on. A cell refused by the policy is never sent. The notebook as a whole
has a time limit too; cells left when it is reached are reported as not run.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from autograder.assemble import Program, Step
from autograder.sandbox import RUNNER, Limits, bwrap, cgroup, environment, sandbox_command

STARTUP_TIMEOUT = 180.0  # seconds for the runner to import torch and IPython on a loaded machine


@dataclass(frozen=True)
class Outcome:
    """What happened to one step. ``status``: ok, error, refused, timeout, crashed, skipped (the
    notebook's time ran out) or ``not run`` (hidden tests after failed visible ones)."""

    status: str
    ename: str = ""
    evalue: str = ""
    stdout: str = ""
    stderr: str = ""

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


class Runner:
    """One sandboxed runner process and the pipe of answers it writes."""

    def __init__(self, scratch: Path, limits: Limits) -> None:
        self.resources = ExitStack()
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
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            self.answer(STARTUP_TIMEOUT)
        except RunnerGoneError:
            self.close()
            raise

    def answer(self, timeout: float) -> dict:
        """The next line the runner writes, parsed; :class:`RunnerGoneError` on timeout or death."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                raise RunnerGoneError(True, f"no answer within {timeout:.0f} s")
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RunnerGoneError(False, self.exit_reason())
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError as err:
            raise RunnerGoneError(
                False, f"the kernel wrote something that is not an answer ({err.msg})"
            ) from err

    def run(self, source: str, timeout: float) -> dict:
        try:
            self.process.stdin.write(json.dumps({"source": source}).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise RunnerGoneError(False, self.exit_reason()) from err
        return self.answer(timeout)

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


def execute(program: Program, limits: Limits, cell_timeout: float, notebook_timeout: float) -> list[Outcome]:
    """Run ``program``'s steps in order in a sandbox; one :class:`Outcome` per step."""
    steps = program.steps
    outcomes: list[Outcome | None] = [None] * len(steps)
    deadline = time.monotonic() + notebook_timeout
    runner: Runner | None = None
    with tempfile.TemporaryDirectory(prefix="autograder-") as scratch:
        os.chmod(scratch, 0o777)
        try:
            for i, step in enumerate(steps):
                if step.refused:
                    outcomes[i] = Outcome("refused", "PolicyViolation", "; ".join(step.refused))
                    continue
                if step.kind == "hidden" and outcomes[i - 1] is not None and outcomes[i - 1].status != "ok":
                    outcomes[i] = Outcome(
                        "not run", evalue="the visible checks of this question failed first"
                    )
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    outcomes[i] = Outcome(
                        "skipped", evalue=f"not run: the notebook's {notebook_timeout:.0f} s ran out"
                    )
                    continue
                try:
                    if runner is None:
                        runner = Runner(Path(scratch), limits)
                        _restore(runner, steps[:i], outcomes[:i], cell_timeout)
                    outcomes[i] = _outcome(runner.run(step.source, min(cell_timeout, left)))
                except RunnerGoneError as gone:
                    limit = f"ran past its time limit ({min(cell_timeout, left):.0f} s)"
                    outcomes[i] = Outcome(
                        "timeout" if gone.timed_out else "crashed",
                        evalue=limit if gone.timed_out else str(gone),
                    )
                    if runner is not None:
                        runner.close()
                    runner = None
        finally:
            if runner is not None:
                runner.close()
    return [o for o in outcomes if o is not None]


def _restore(runner: Runner, steps: list[Step], outcomes: list, cell_timeout: float) -> None:
    """Re-run, in a fresh process, the cells that had run without error before (tests excepted)."""
    for step, outcome in zip(steps, outcomes, strict=True):
        if outcome is not None and outcome.status == "ok" and step.kind != "test":
            runner.run(step.source, cell_timeout)


def _outcome(answer: dict) -> Outcome:
    return Outcome(
        "ok" if answer.get("ok") else "error",
        str(answer.get("ename", "")),
        str(answer.get("evalue", "")),
        str(answer.get("stdout", "")),
        str(answer.get("stderr", "")),
    )
