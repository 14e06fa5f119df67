"""An interactive bash inside umvu, driven through a pseudo-terminal: job
control and terminal signals must work as they do natively."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time

import pytest

PS1 = "[vu-prompt]$ "
PROMPT = re.escape(PS1)


class Terminal:
    """A minimal expect(1) on a pty (pexpect is not a dependency)."""

    def __init__(self, argv, env, cwd):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:           # child: becomes the session leader on the pty
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.buf = ""
        self.status = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                pytest.fail(f"no {pattern!r} within {timeout}s; "
                            f"terminal shows: {self.buf[-2000:]!r}")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:             # EIO: the other side is closed
            return False
        self.buf += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def command(self, line: str, timeout: float = 20) -> str:
        """Run one command line and return what it printed before the prompt."""
        self.send(line + "\n")
        self.expect(re.escape(line) + "\n", timeout)      # the echo
        m = self.expect(PROMPT, timeout)
        return m.string[:m.start()]

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        pytest.fail("umvu did not exit")

    def close(self) -> None:
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)     # the pty session
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        os.close(self.fd)


@pytest.fixture
def term(run_umvu):
    argv, env = run_umvu.command(["bash", "--norc", "--noprofile", "-i"])
    env = dict(env, TERM="dumb")
    env.pop("PS1", None)
    t = Terminal(argv, env, run_umvu.home())
    t.send(f"PS1='{PS1[:4]}''{PS1[4:]}'\n")     # quoted so the echo does not match
    t.expect(PROMPT)
    yield t
    t.close()


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for_foreground(term, argv: list[str], timeout: float = 20) -> int:
    """Wait until a process running argv holds the terminal's foreground."""
    want = "\0".join(argv) + "\0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(term.pid):
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    cmdline = f.read()
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pgrp, tpgid = int(fields[2]), int(fields[5])
            if cmdline == want and pgrp == tpgid:
                return pid
        time.sleep(0.05)
    pytest.fail(f"{argv} never reached the foreground")


def poll_command(term, line: str, pattern: str, timeout: float = 20) -> str:
    """Repeat a command until its output matches (the shell learns about a
    child's state change asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        out = term.command(line)
        if re.search(pattern, out):
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"{line!r} never printed {pattern!r}; last: {out!r}")
        time.sleep(0.1)


# stops in the tracer all the time; says when Python's start-up is over (an
# interrupt during start-up makes python exit 1, natively too)
BUSY = 'import os, sys; sys.stdout.write("busy-" "ready\\n"); sys.stdout.flush()\n' \
       'while True: os.geteuid()'


@pytest.mark.parametrize("setup,argv,ready", [
    ("true", ["sleep", "30"], None),
    ("vu_insmod unrealuidgid", ["python3", "-c", BUSY], "busy-ready\n"),
], ids=["sleep", "trapped-busy-loop"])
def test_ctrl_c_interrupts_foreground_job(term, setup, argv, ready):
    assert term.command(f"echo $UMVU_PID; {setup}") == f"{term.pid}\n"
    term.send(" ".join(a if a.isidentifier() or a in ("-c", "30")
                       else "'" + a + "'" for a in argv) + "\n")
    wait_for_foreground(term, argv)
    if ready:
        term.expect(ready)
    start = time.monotonic()
    term.send("\x03")
    term.expect(PROMPT, timeout=10)
    assert time.monotonic() - start < 10
    assert term.command("echo $?") == "130\n"


def test_ctrl_z_stops_then_fg(term):
    term.send("sleep 30\n")
    wait_for_foreground(term, ["sleep", "30"])
    term.send("\x1a")
    term.expect(PROMPT, timeout=10)
    assert re.search(r"^\[1\]\+\s+Stopped\s+sleep 30$", term.command("jobs"), re.M)
    term.send("fg\n")
    term.expect("sleep 30\n")
    wait_for_foreground(term, ["sleep", "30"])
    term.send("\x03")
    term.expect(PROMPT, timeout=10)
    assert term.command("echo $?") == "130\n"
    assert term.command("jobs") == ""


def test_kill_stop_and_cont_background_job(term):
    out = term.command("sleep 30 &")
    assert re.fullmatch(r"\[1\] \d+\n", out), out
    poll_command(term, "kill -STOP %1; jobs", r"^\[1\]\+\s+Stopped.*sleep 30", 30)
    poll_command(term, "kill -CONT %1; jobs", r"^\[1\]\+\s+Running\s+sleep 30 &$", 30)
    assert term.command("kill %1; wait %1; echo $?").splitlines()[-1] == "143"


def test_exit_status_of_interactive_shell(term):
    assert term.command("vu_insmod unrealuidgid && vu_lsmod") == \
        "unrealuidgid: virtual uid/gid\n"
    term.send("exit 7\n")
    assert term.wait() == 7


BUSY_2S = """import os, time
print("started", flush=True)
end, n = time.monotonic() + 2, 0
while time.monotonic() < end:
    os.geteuid(); n += 1
print("finished", n > 0, flush=True)
"""


def test_umvu_itself_stopped_and_continued_by_job_control(run_umvu, tmp_path):
    # umvu as a job of a native interactive shell: Ctrl-Z stops umvu and its
    # tracees (one busy in trapped calls), fg resumes them all
    prog = tmp_path / "busy.py"
    prog.write_text(BUSY_2S)
    rc = tmp_path / "rc"
    rc.write_text("vu_insmod unrealuidgid\n")
    argv, env = run_umvu.command(["bash", "--norc", "--noprofile", "-i"])
    t = Terminal(["/bin/bash", "--norc", "--noprofile", "-i"], dict(env, TERM="dumb"),
                 tmp_path)
    try:
        t.send(f"PS1='{PS1[:4]}''{PS1[4:]}'\n")
        t.expect(PROMPT)
        t.send(f"umvu -f {rc} -- python3 {prog}\n")
        t.expect("started\n")
        t.send("\x1a")
        t.expect(PROMPT, timeout=10)
        assert re.search(r"^\[1\]\+\s+Stopped\s+umvu ", t.command("jobs"), re.M)
        t.send("fg\n")
        t.expect("finished True\n", timeout=30)
        t.expect(PROMPT)
        assert t.command("echo $?") == "0\n"
    finally:
        t.close()
