"""vufuse robustness, end to end in real umvu sessions: the FUSE daemon
killed from outside the view, a corrupt image, a missing FUSE program, an
unknown type. Every case must end in an error for the caller, never a
hang, and the session must go on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from test_vufuse_support import (
    NOBODY, TIMEOUT, VIEW_ENV, build_image, make_source_tree, nobody_tmp,
    sections, short, values)


@pytest.fixture
def area():
    d = nobody_tmp("vufuse-robust-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _mnt(area, name="mnt"):
    d = area / name
    d.mkdir(exist_ok=True)
    (d / "host-marker").write_text("host\n")
    os.chown(d, NOBODY, NOBODY)
    os.chown(d / "host-marker", NOBODY, NOBODY)
    return d


def _children() -> dict:
    """pid -> ppid of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(root: int) -> set[int]:
    parent = _children()
    found, changed = {root}, True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found - {root}


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def find_daemon(root_pid: int, program: str, image) -> list[int]:
    """The FUSE daemon(s) below umvu: argv[0] is the program, the image in argv."""
    hits = []
    for pid in _descendants(root_pid):
        argv = _cmdline(pid)
        if argv and os.path.basename(argv[0]) == os.fsencode(program) and \
                os.fsencode(str(image)) in argv:
            hits.append(pid)
    return hits


# ---------------------------------------------------------------------------
# the daemon dies

@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_daemon_killed_from_outside(run_umvu, area, user):
    make_source_tree(area)
    img = build_image("ext4", area / "src", area / "k.img")
    mnt = _mnt(area)
    ready, go = area / "ready", area / "go"
    script = textwrap.dedent(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        echo "before=$(cat $M/hello.txt)"
        : > {ready}
        i=0; while [ ! -e {go} ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
        echo "== ls"
        ls $M; echo "ls=$?"
        echo "== cat"
        cat $M/hello.txt; echo "cat=$?"
        echo "== write"
        echo x > $M/new; echo "write=$?"
        echo "== umount"
        vuumount $M; echo "umount=$?"
        echo "== after"
        ls $M; echo "after=$?"
        echo "== -"
        echo MARKER
        """)
    proc = run_umvu.popen(script, user=user, extra_env=VIEW_ENV)
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.exists():
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the session never got ready:\n{out}\n{err}")
    daemons = find_daemon(proc.pid, "fuse2fs", img)
    assert len(daemons) == 1, (
        f"no single fuse2fs for {img} among the descendants of umvu "
        f"{proc.pid}: {daemons}")
    os.kill(daemons[0], signal.SIGKILL)
    go.touch()
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the view hung after the daemon died:\n{out}\n{err}")
    v, secs = values(out), sections(out)
    msg = f"stdout:\n{out}\nstderr (tail):\n{err[-3000:]}"
    assert v.get("mount") == "0" and v.get("before") == "hello world", msg
    assert "MARKER" in out, f"the shell did not survive: {msg}"
    # an error, reported as one
    assert v.get("ls") not in (None, "0"), msg
    assert v.get("cat") not in (None, "0"), msg
    assert v.get("write") not in (None, "0"), msg
    assert f"ls: cannot access '{mnt}'" in err or f"ls: cannot open directory '{mnt}'" in err, msg
    # the mount can still be taken away, and the host directory is back
    assert v.get("umount") == "0", msg
    assert v.get("after") != "0" or secs["after"][:-1] == ["host-marker"], msg
    assert proc.returncode == 0, msg


# ---------------------------------------------------------------------------
# mounts that cannot work

def test_corrupt_image_is_refused_and_session_goes_on(vu, area):
    bad = area / "bad.img"
    bad.write_bytes(os.urandom(4 * 1024 * 1024))
    os.chown(bad, NOBODY, NOBODY)
    make_source_tree(area)
    good = build_image("ext4", area / "src", area / "good.img")
    mnt = _mnt(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 {bad} $M; echo "mount=$?"
        echo "== mounts"; grep -c " $M " /proc/mounts; echo "== -"
        echo "== ls"; ls $M; echo "== -"
        vumount -t vufuseext4 {good} $M; echo "good=$?"
        echo "hello=$(cat $M/hello.txt)"
        vuumount $M; echo "umount=$?"
        """, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("mount") not in (None, "0"), short(res)
    assert f"vumount: {mnt}:" in res.err, f"no message for the refused mount: {short(res)}"
    assert secs["mounts"] == ["0"], f"something got mounted: {short(res)}"
    assert secs["ls"] == ["host-marker"], short(res)
    assert v.get("good") == "0" and v.get("hello") == "hello world", short(res)
    assert v.get("umount") == "0", short(res)
    assert res.rc == 0, short(res)


def test_missing_program_is_named(vu, area):
    mnt = _mnt(area, "m")
    res = vu(f"""
        vu_insmod vufuse || exit 90
        vumount -t vufuse -o prog=no-such-fuse-prog x {mnt}; echo "mount=$?"
        echo "== mounts"; grep -c " {mnt} " /proc/mounts; echo "== -"
        echo "session=goes-on"
        """, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("mount") not in (None, "0"), short(res)
    assert secs["mounts"] == ["0"], short(res)
    assert v.get("session") == "goes-on", short(res)
    assert "no-such-fuse-prog" in res.err, (
        "the error does not say which program is missing (vufuse builds the "
        f"message 'vufuse: no-such-fuse-prog not found ...'): {res.err!r}")


def test_unknown_type_fails(vu, area):
    make_source_tree(area)
    img = build_image("ext4", area / "src", area / "u.img")
    mnt = _mnt(area)
    res = vu(f"""
        vu_insmod vufuse || exit 90
        vumount -t vufusebogus {img} {mnt}; echo "mount=$?"
        echo "== mounts"; grep -c " {mnt} " /proc/mounts; echo "== -"
        echo "== ls"; ls {mnt}; echo "== -"
        echo "session=goes-on"
        """, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("mount") not in (None, "0"), short(res)
    assert "vumount:" in res.err, short(res)
    assert secs["mounts"] == ["0"] and secs["ls"] == ["host-marker"], short(res)
    assert v.get("session") == "goes-on", short(res)
