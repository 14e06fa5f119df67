"""What modules may want to know of a calling process, from /proc."""

from __future__ import annotations

import os


def status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def fs_ids(pid: int) -> tuple[int, int]:
    """The (fsuid, fsgid) the kernel checks the process's file access with."""
    st = status(pid)
    try:
        return int(st["Uid"].split()[3]), int(st["Gid"].split()[3])
    except (KeyError, IndexError, ValueError):
        return os.getuid(), os.getgid()


def umask(pid: int) -> int:
    try:
        return int(status(pid)["Umask"], 8)
    except (KeyError, ValueError):
        return 0o022
