"""The process that runs one submission's cells, inside the sandbox; started by ``autograder.execute``.

It reads request frames (``course_utils.wire``) on stdin and writes one answer frame per request, with
the request's id, on the descriptor that was stdout when it started (fds 1 and 2 then point at
/dev/null, so no output of student code, Python's or C's, can mix with the answers; the sandbox mounts
no ``/proc``, so no path leads to that descriptor). A request ``{"op": "cell", "source": ...}`` runs a
cell of the student's notebook in IPython and answers ``{"ok", "ename", "evalue", "stdout",
"stderr"}``; every other request goes to the probe (``course_utils.probe``), which runs the student's
objects on the judge's inputs. Test cells never come here: the judge runs them outside. The first
answer, to no request, says which devices the probe has. It runs as a plain script (no import of the
autograder package) so that the sandbox needs only this file and ``course_utils``.
"""

import io
import os
import resource
import sys

OUTPUT_LIMIT = 20_000  # characters of stdout/stderr kept per cell
MESSAGE_LIMIT = 4_000  # characters of an exception's message kept
REQUEST_LIMIT = 256 << 20  # bytes of one request


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


def read_frame(stream) -> bytes | None:
    """The next request frame on ``stream``, or None at its end."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    if size > REQUEST_LIMIT:
        return None
    body = stream.read(size)
    return head + body if len(body) == size else None


def run_cell(shell, source: str) -> dict:
    out, err = CappedText(OUTPUT_LIMIT), CappedText(OUTPUT_LIMIT)
    sys.stdout, sys.stderr = out, err
    try:
        result = shell.run_cell(source, store_history=False)  # no In/Out history
        error = result.error_before_exec or result.error_in_exec
    except BaseException as caught:  # noqa: BLE001 - SystemExit and friends end the cell, not the run
        error = caught
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    answer = {"ok": error is None, "stdout": out.value(), "stderr": err.value()}
    if error is not None:
        answer["ename"], answer["evalue"] = describe(error)
    return answer


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb")
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    set_limits(*(int(os.environ.get(k, "0")) for k in ("GRADER_MEMORY", "GRADER_CPU", "GRADER_FILE_SIZE")))

    import matplotlib

    matplotlib.use("Agg")
    import torch  # noqa: F401 - the notebooks import it; loaded once, before any cell is timed
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from course_utils.probe import Probe
    from course_utils.wire import decode, encode

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.showtraceback = lambda *args, **kwargs: None  # the answer carries the error
    probe = Probe(shell.user_ns)
    answers.write(probe.answer(encode({"op": "hello", "id": "hello"}, [])))
    answers.flush()
    while (frame := read_frame(requests)) is not None:
        meta, _ = decode(frame)
        if meta.get("op") == "cell":
            answer = encode({"id": meta.get("id"), **run_cell(shell, str(meta.get("source", "")))}, [])
        else:
            try:
                answer = probe.answer(frame)
            except BaseException as caught:  # noqa: BLE001 - SystemExit in student code ends the request only
                ename, evalue = describe(caught)
                error = {"stage": "call", "type": ename, "message": evalue}
                answer = encode({"id": meta.get("id"), "error": error}, [])
        answers.write(answer)
        answers.flush()


if __name__ == "__main__":
    main()
