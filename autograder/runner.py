"""The process that runs one submission's cells, inside the sandbox; started by ``autograder.execute``.

It reads one JSON request per line on stdin, ``{"source": ...}``, runs it as an IPython cell and
answers on the descriptor that was stdout when it started (fds 1 and 2 then point at /dev/null, so no
output of student code, Python's or C's, can mix with the answers): ``{"ok": bool, "ename",
"evalue", "stdout", "stderr"}``. The first line it writes is ``{"ready": true}``. It runs as a plain
script (no import of the autograder package) so that the sandbox needs only this file.
"""

import io
import json
import os
import resource
import sys

OUTPUT_LIMIT = 20_000  # characters of stdout/stderr kept per cell
MESSAGE_LIMIT = 4_000  # characters of an exception's message kept


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def value(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n[{self.dropped} more characters not kept]" if self.dropped else "")


def set_limits(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    """Address space, CPU time, file size and open files of this process and its children."""
    for name, value in (
        ("RLIMIT_AS", memory_bytes),
        ("RLIMIT_CPU", cpu_seconds),
        ("RLIMIT_FSIZE", file_bytes),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_CORE", 0),
    ):
        if value:
            resource.setrlimit(getattr(resource, name), (value, value))


def describe(error: BaseException) -> tuple[str, str]:
    """(type name, message) of an exception, whatever its ``__str__`` does."""
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001 - a student's exception may fail to print
        message = "<the message could not be printed>"
    return type(error).__name__, message[:MESSAGE_LIMIT]


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    set_limits(*(int(os.environ.get(k, "0")) for k in ("GRADER_MEMORY", "GRADER_CPU", "GRADER_FILE_SIZE")))

    import matplotlib

    matplotlib.use("Agg")
    import torch  # noqa: F401 - the notebooks import it; loaded once, before any cell is timed
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.showtraceback = lambda *args, **kwargs: None  # the answer carries the error
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        out, err = CappedText(OUTPUT_LIMIT), CappedText(OUTPUT_LIMIT)
        sys.stdout, sys.stderr = out, err
        try:
            result = shell.run_cell(request["source"], store_history=False)  # no In/Out history
            error = result.error_before_exec or result.error_in_exec
        except BaseException as caught:  # noqa: BLE001 - SystemExit and friends end the cell, not the run
            error = caught
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        answer = {"ok": error is None, "stdout": out.value(), "stderr": err.value()}
        if error is not None:
            answer["ename"], answer["evalue"] = describe(error)
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
