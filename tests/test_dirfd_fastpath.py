"""Calls relative to a directory descriptor the view opened, decided by the
C core (csrc/fastpath.c: the descriptor's view path, checked against
/proc/TID/fd at each call) and the descriptor's own calls let through
natively on a plain bind (UMVU_FD_NATIVE: fstat, AT_EMPTY_PATH, getdents):
a probe walks a tree through descriptors only (openat, fstatat with and
without AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH, readlinkat, "..", symlinks to
directories and out of the tree, a descriptor number closed and reused for
a plain file, dup2 to a far number) and must print what it prints on the
host tree itself, under a plain bind and under a cow mount (where a
deleted name must stay deleted), as root and as an unprivileged user.
"""

from __future__ import annotations

import os
import shutil

import pytest

from _vufs_helpers import NOBODY, chown_tree, make_tmp, native, vu  # noqa: F401

PROBE = r'''
import os, stat, sys
top = sys.argv[1]
out = []
def say(*a):
    print(*a, flush=True)
def desc(dirfd, name, follow=True):
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=follow)
        return "%s:%o:%d" % (stat.filemode(st.st_mode), st.st_mode & 0o7777,
                             st.st_size if stat.S_ISREG(st.st_mode) else 0)
    except OSError as e:
        return "E%d" % e.errno
def walk(dirfd, rel, depth):
    for name in sorted(os.listdir(dirfd)):
        say(rel + name, desc(dirfd, name), desc(dirfd, name, False))
        try:
            say(" link", os.readlink(name, dir_fd=dirfd))
        except OSError as e:
            pass
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        except OSError as e:
            say(" open", "E%d" % e.errno)
            continue
        st = os.fstat(sub)      # glibc: newfstatat(fd, "", AT_EMPTY_PATH)
        say(" fstat", stat.filemode(st.st_mode), oct(st.st_mode & 0o7777))
        say(" up", sorted(os.listdir(os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=sub)))[:3])
        if depth < 4:
            walk(sub, rel + name + "/", depth + 1)
        os.close(sub)
root = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
walk(root, "", 0)
# a number closed and reused for a plain file (not opened through the view)
d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root)
os.close(d)
plain = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
say("reused", plain == d, desc(plain, "passwd"), desc(plain, "../" + os.path.basename(top) + "/file"))
# dup2 of a view directory to a far number
os.dup2(root, 77)
say("dup2", desc(77, "sub/a"), desc(77, "sub/../file"), desc(77, "lnk/a"))
say("escape", desc(root, "../../../etc/passwd"), desc(root, "out/passwd"))
# opens the C core makes below a plain bind: /proc shows the view's path
sub = os.open("sub", os.O_RDONLY, dir_fd=root)          # a directory, no O_DIRECTORY
say("proc", os.readlink("/proc/self/fd/%d" % sub), desc(sub, "a"))
f = os.open("sub/a", os.O_RDONLY, dir_fd=root)
say("procfile", os.readlink("/proc/self/fd/%d" % f), os.read(f, 10))
# O_CREAT|O_EXCL never follows a last symlink; O_CREAT through one creates its target
try:
    os.open("dangling", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=root)
    say("excl", "created")
except OSError as e:
    say("excl", "E%d" % e.errno)
made = os.open("dangling", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=root)
os.write(made, b"made")
say("through", desc(root, "nowhere"), sorted(os.listdir(root)))
os.unlink("nowhere", dir_fd=root)
os.fchdir(sub)
say("fchdir", os.getcwd(), desc(-100, "a"), desc(-100, "../file"))
'''


def make_tree(base):
    os.makedirs(f"{base}/sub/deep/deeper", exist_ok=True)
    with open(f"{base}/file", "w") as f:
        f.write("file\n")
    with open(f"{base}/sub/a", "w") as f:
        f.write("aaaa\n")
    with open(f"{base}/sub/deep/deeper/z", "w") as f:
        f.write("z" * 100)
    with open(f"{base}/gone", "w") as f:
        f.write("deleted in the view\n")
    os.symlink("sub", f"{base}/lnk")
    os.symlink("/etc", f"{base}/out")
    os.symlink("nowhere", f"{base}/dangling")
    os.chmod(f"{base}/sub/deep", 0o750)


@pytest.mark.parametrize("kind", ["bind", "cow"])
@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_dirfd_relative_calls_match_the_host(vu, kind, user):
    base = make_tmp(owner=user)
    try:
        lower = f"{base}/lower"
        os.mkdir(lower)
        make_tree(lower)
        probe = f"{base}/probe.py"
        with open(probe, "w") as f:
            f.write(PROBE)
        if user is not None:
            chown_tree(base, user)
        # the reference: the host tree as the view must show it
        ref_dir = f"{base}/ref"
        shutil.copytree(lower, ref_dir, symlinks=True)
        os.unlink(f"{ref_dir}/gone")
        if user is not None:
            chown_tree(ref_dir, user)
        mnt = f"{base}/mnt"
        os.mkdir(mnt)
        if user is not None:
            os.chown(mnt, user, user)
        mount = (f"vumount -t vufs {lower} {mnt}" if kind == "bind" else
                 f"mkdir {base}/store && vumount -t vufs -o cow {base}/store {lower} && "
                 f"rm {lower}/gone")
        where = mnt if kind == "bind" else lower
        if kind == "bind":
            os.unlink(f"{lower}/gone")      # a bind shows the host as it is
        res = vu(f"""
            vu_insmod vufs
            {mount}; echo "mount=$?"
            cd / && /usr/bin/python3 {probe} {where}
            """, user=user)
        assert res.rc == 0 and "mount=0" in res.out, res
        ref = native(f"cd / && /usr/bin/python3 {probe} {ref_dir}")
        assert ref.rc == 0, ref
        got = res.out.split("mount=0\n", 1)[1]
        assert got.replace(where, "@") == ref.out.replace(ref_dir, "@"), res
        assert "E" not in got.split("escape", 1)[1].split()[0]
        if kind == "cow":
            assert os.path.exists(f"{lower}/gone")   # the lower layer kept it
    finally:
        shutil.rmtree(base, ignore_errors=True)
