"""A third-party module, written from docs/modules.md alone, in real sessions.

tests/data/thirdparty/countfs.py is installed the way the page says a user
installs one: copied into ~/.vu/modules/ of the user who starts umvu (a
temporary HOME here), then `vu_insmod countfs` and `vumount -t countfs`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import NOBODY, nobody_dir

MODULE = Path(__file__).resolve().parent / "data" / "thirdparty" / "countfs.py"
AS_NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"


@pytest.fixture
def countfs(run_umvu):
    """run_umvu, plus install(user): countfs.py into that user's ~/.vu/modules."""
    def install(user=None):
        home = run_umvu.home(user)
        mods = home / ".vu" / "modules"
        mods.mkdir(parents=True, exist_ok=True)
        shutil.copy(MODULE, mods / "countfs.py")
        if user is not None:
            for p in (home / ".vu", mods, mods / "countfs.py"):
                os.chown(p, NOBODY, NOBODY)
        return home
    run_umvu.install = install
    return run_umvu


@pytest.fixture
def shared_dir():
    """A directory both root and uid 65534 can walk to (tmp_path is 0700)."""
    d = nobody_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def split(stdout: str) -> tuple[dict, list]:
    """key=value lines as a dict, and the other lines in order."""
    lines = stdout.splitlines()
    return (dict(l.split("=", 1) for l in lines if "=" in l),
            [l for l in lines if "=" not in l])


def test_countfs_session(countfs, user):
    countfs.install(user)
    owner = "0" if user is None else str(NOBODY)
    r = countfs(r'''
        set -u
        M="$HOME/mnt"; mkdir -p "$M"
        echo "before=$(uname -n)"
        vu_insmod countfs; echo "insmod=$?"
        vu_lsmod | grep -c countfs
        echo "loaded=$(uname -n)"
        vumount -t countfs none "$M"; echo "mount=$?"
        echo "mounted=$(uname -n)"
        cat "$M/count"; cat "$M/count"; cat "$M/count"
        ls "$M"
        ls -ln "$M" | grep ' count$' | awk '{print "ls", $1, $3, $4, $5}'
        stat -c 'dir %A %u' "$M"
        grep " $M " /proc/mounts | awk '{print "proc", $1, $3, $4}'
        stat -f -c 'statfs %t' "$M"
        test -r "$M/count"; echo "readable=$?"
        test -w "$M/count"; echo "writable=$?"
        echo nope > "$M/count" 2>/dev/null; echo "write=$?"
        rm -f "$M/count" 2>/dev/null; echo "rm=$?"
        touch "$M/new" 2>/dev/null; echo "touch=$?"
        cat "$M/missing" 2>/dev/null; echo "missing=$?"
        cat "$M/count"
        vuumount "$M"; echo "umount=$?"
        echo "after=$(uname -n)"
        ls -A "$M" | wc -l
    ''', user=user)
    assert r.returncode == 0, r.stderr
    kv, plain = split(r.stdout)
    assert kv["before"] != "countfs"
    assert kv["loaded"] == kv["before"]          # the uname handler says KERNEL...
    assert kv["mounted"] == "countfs"            # ...until a countfs is mounted
    assert kv["after"] == kv["before"]
    assert (kv["insmod"], kv["mount"], kv["umount"], kv["readable"]) == ("0",) * 4
    assert all(kv[k] != "0" for k in ("writable", "write", "rm", "touch", "missing")), kv
    assert plain == [
        "1",                                     # vu_lsmod lists it
        "1", "2", "3",                           # three opens
        "count",                                 # ls
        f"ls -r--r--r-- {owner} {owner} 2",      # "3\n"; the mounter's fs ids
        f"dir dr-xr-xr-x {owner}",
        "proc none countfs ro",                  # PathService.readonly = True
        "statfs 636f756e",
        "4",                                     # refused opens do not count
        "0",                                     # unmounted: the empty host dir again
    ], r.stdout + r.stderr


def test_countfs_start_option(countfs):
    countfs.install()
    r = countfs(r'''
        mkdir -p mnt
        vu_insmod countfs
        vumount -t countfs -o start=10 none mnt; echo "mount=$?"
        cat mnt/count; cat mnt/count
        grep " $PWD/mnt " /proc/mounts | awk '{print $4}'
        vuumount mnt
        vumount -t countfs -o ro,start=41 none mnt; echo "mount=$?"
        cat mnt/count
    ''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["mount=0", "11", "12", "ro,start=10",
                                     "mount=0", "42"], r.stderr


def test_countfs_bad_options(countfs):
    countfs.install()
    r = countfs(r'''
        mkdir -p mnt
        vu_insmod countfs
        vumount -t countfs -o bogus=1 none mnt; echo "bogus=$?"
        vumount -t countfs -o start=abc none mnt; echo "abc=$?"
        grep -c countfs /proc/mounts
        echo "nodename=$(uname -n)"
        vumount -t countfs -o start=1 none mnt; echo "good=$?"
        cat mnt/count
    ''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["bogus=1", "abc=1", "0",
                                     f"nodename={os.uname().nodename}",
                                     "good=0", "2"], r.stderr
    # the module's message, then vumount's own line with the errno
    assert "countfs: unknown option 'bogus'" in r.stderr
    assert "countfs: start needs an integer, not 'abc'" in r.stderr
    assert r.stderr.count("vumount: mnt: Invalid argument") == 2, r.stderr
    assert "Traceback" not in r.stderr


def test_countfs_owner_is_mounting_caller(countfs, shared_dir):
    """Caller.fs_ids(): the files belong to whoever ran vumount."""
    countfs.install()
    r = countfs(rf'''
        cd {shared_dir}
        mkdir -p mnt
        vu_insmod countfs
        {AS_NOBODY} vumount -t countfs none mnt; echo "mount=$?"
        stat -c '%u:%g' mnt mnt/count
        cat mnt/count
    ''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["mount=0", "65534:65534", "65534:65534", "1"], r.stderr


def test_countfs_read_by_other_uid_in_root_view(countfs, shared_dir):
    countfs.install()
    r = countfs(rf'''
        cd {shared_dir}
        mkdir -p mnt
        vu_insmod countfs
        vumount -t countfs none mnt
        {AS_NOBODY} cat mnt/count
        cat mnt/count
    ''')
    assert (r.returncode, r.stdout) == (0, "1\n2\n"), r.stderr


def test_countfs_not_installed(run_umvu):
    r = run_umvu('vu_insmod countfs; echo "rc=$?"')
    assert r.stdout == "rc=1\n"
    assert "vu_insmod: countfs: no such module" in r.stderr
