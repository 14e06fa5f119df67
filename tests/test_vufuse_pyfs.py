"""vufuse with a fusepy Operations class mounted inside the hypervisor
(`-o pyfs=module:Class`, no daemon): examples/pymemfs.py copied to
~/.vu/modules and driven with coreutils, as root and as uid 65534.
"""

from __future__ import annotations

import os
import shutil

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from conftest import REPO, USER_IDS, USERS
from test_vufuse_support import NOBODY, VIEW_ENV, nobody_tmp, sections, short, values

PYMEMFS = REPO / "examples" / "pymemfs.py"


@pytest.fixture
def area():
    d = nobody_tmp("vufuse-pyfs-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def install_pymemfs(vu, user) -> None:
    home = vu.home(user)
    mods = home / ".vu" / "modules"
    mods.mkdir(parents=True, exist_ok=True)
    shutil.copy(PYMEMFS, mods / "pymemfs.py")
    if user is not None:
        for p in (home / ".vu", mods, mods / "pymemfs.py"):
            os.chown(p, NOBODY, NOBODY)


def mem_dir(area):
    d = area / "mem"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    return d


MOUNT = "vumount -t vufuse -o rw+,pyfs=pymemfs:MemoryFS none $M"


@pytest.mark.parametrize("user", USERS, ids=USER_IDS)
def test_pyfs_coreutils(vu, area, user):
    install_pymemfs(vu, user)
    mem = mem_dir(area)
    src = area / "services"
    src.write_bytes(b"".join(b"line %d of a host file\n" % i for i in range(5000)))
    os.chown(src, NOBODY, NOBODY)
    res = vu(f"""
        M={mem}
        vu_insmod vufuse || exit 90
        {MOUNT}; echo "mount=$?"
        echo hello > $M/a.txt; echo "redirect=$?"
        echo "cat1=$(cat $M/a.txt)"
        echo world >> $M/a.txt; echo "append=$?"
        echo "lines=$(wc -l < $M/a.txt)"
        mkdir $M/d; echo "mkdir=$?"
        mkdir -p $M/d/e/f; echo "mkdirp=$?"
        cp {src} $M/d/services; echo "cp=$?"
        cmp {src} $M/d/services; echo "cmp=$?"
        echo "wc=$(wc -c < $M/d/services)"
        truncate -s 3 $M/a.txt; echo "truncate=$?"
        echo "cat2=$(cat $M/a.txt)"
        truncate -s 8 $M/a.txt; echo "size8=$(stat -c %s $M/a.txt)"
        echo "== ls"; ls $M; echo "== lsd"; ls $M/d; echo "== -"
        rm $M/a.txt; echo "rm=$?"
        rmdir $M/d/e/f; echo "rmdir=$?"
        echo "== after"; ls $M; ls $M/d/e; echo "== -"
        vuumount $M; echo "umount=$?"
        echo "== host"; ls {mem}; echo "== -"
        """, user=user, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("mount") == "0", short(res)
    for step in ("redirect", "append", "mkdir", "mkdirp", "cp", "cmp",
                 "truncate", "rm", "rmdir", "umount"):
        assert v.get(step) == "0", f"{step} failed: {short(res)}"
    assert v.get("cat1") == "hello", short(res)
    assert v.get("lines") == "2", short(res)
    assert v.get("wc") == str(src.stat().st_size), short(res)
    assert v.get("cat2") == "hel", short(res)
    assert v.get("size8") == "8", short(res)
    assert secs["ls"] == ["a.txt", "d"], short(res)
    assert secs["lsd"] == ["e", "services"], short(res)
    assert secs["after"] == ["d"], short(res)
    assert secs["host"] == [], short(res)       # nothing reached the host dir
    assert res.rc == 0, short(res)


@pytest.mark.parametrize("user", USERS, ids=USER_IDS)
def test_pyfs_directories(vu, area, user):
    """mkdir, ls, stat, rmdir on the in-process file system."""
    install_pymemfs(vu, user)
    mem = mem_dir(area)
    res = vu(f"""
        M={mem}
        vu_insmod vufuse || exit 90
        {MOUNT}; echo "mount=$?"
        mkdir $M/d1 $M/d2; echo "mkdir=$?"
        mkdir -p $M/d1/x/y; echo "mkdirp=$?"
        echo "== ls"; ls $M; ls $M/d1/x; echo "== -"
        echo "type=$(stat -c %F $M/d1/x)"
        rmdir $M/d1/x/y $M/d1/x $M/d2; echo "rmdir=$?"
        echo "== after"; ls $M; echo "== -"
        vuumount $M; echo "umount=$?"
        """, user=user, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    for step in ("mount", "mkdir", "mkdirp", "rmdir", "umount"):
        assert v.get(step) == "0", f"{step} failed: {short(res)}"
    assert secs["ls"] == ["d1", "d2", "y"], short(res)
    assert v.get("type") == "directory", short(res)
    assert secs["after"] == ["d1"], short(res)


def test_pyfs_umask(vu, area):
    """mkdir on FUSE gets mode & ~umask: `umask 022; mkdir d` gives 0755."""
    install_pymemfs(vu, None)
    mem = mem_dir(area)
    res = vu(f"""
        M={mem}
        vu_insmod vufuse || exit 90
        {MOUNT}; echo "mount=$?"
        umask 022; mkdir $M/d; echo "mode=$(stat -c %a $M/d)"
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("mode") == "755", f"umask 022 ignored: mkdir gave {v.get('mode')}"


def test_pyfs_remove_missing_is_enoent(vu, area):
    """A FUSE file system is never asked to unlink/rmdir a name its
    getattr does not know (the kernel looks it up first): rm of a missing
    file is ENOENT, not EIO from the Operations class."""
    install_pymemfs(vu, None)
    mem = mem_dir(area)
    res = vu(f"""
        M={mem}
        vu_insmod vufuse || exit 90
        {MOUNT}; echo "mount=$?"
        rm $M/missing; echo "rm=$?"
        rmdir $M/missingdir; echo "rmdir=$?"
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("rm") == "1" and v.get("rmdir") == "1", short(res)
    assert "rm: cannot remove" in res.err and "No such file or directory" in res.err, (
        f"rm of a missing file: {short(res)}")
    assert "Input/output error" not in res.err, short(res)
