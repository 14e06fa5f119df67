"""What the tracer and modules want to know of a process, from /proc
(its threads, parents, umask, pending signals). Its file credentials, and
borrowing them, are umvu/creds.py's."""

from __future__ import annotations

import os


def status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def tgid(tid: int) -> int:
    """The process a thread belongs to (tid itself if it is gone)."""
    return int(fields(tid, "Tgid").get("Tgid", tid))


def is_dead(tid: int) -> bool:
    """A zombie, or gone (PTRACE_SEIZE refuses a zombie with EPERM)."""
    return fields(tid, "State").get("State", "X")[:1] in ("Z", "X")


def tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, ppid) of every process below root, parents first, from the
    ppid fields of /proc (the kernel's children files are not always built)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        for pid in children.get(parent, ()):
            found.append((pid, parent))
            todo.append(pid)
    return found


def fields(pid: int, *names: str) -> dict[str, str]:
    """Only these fields of /proc/PID/status: a root hypervisor asks for
    credentials at every file call it does for a process, and parsing the
    whole file cost more than the rest of the call."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    found = {}
    for name in names:
        key = b"\n" + name.encode() + b":\t"
        start = data.find(key)
        if start >= 0:
            start += len(key)
            found[name] = data[start:data.find(b"\n", start)].decode()
    return found


def umask(pid: int) -> int:
    try:
        return int(fields(pid, "Umask")["Umask"], 8)
    except (KeyError, ValueError):
        return 0o022


def signal_pending(pid: int) -> bool:
    """Has the process a signal waiting that it neither blocks nor ignores?"""
    st = status(pid)
    try:
        pending = int(st["SigPnd"], 16) | int(st["ShdPnd"], 16)
        return bool(pending & ~int(st["SigBlk"], 16) & ~int(st["SigIgn"], 16))
    except (KeyError, ValueError):
        return False
