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


def tree_and_probe(base: str, probe_text: str) -> tuple[str, str]:
    """base/lower with make_tree's tree, and base/probe.py."""
    lower = f"{base}/lower"
    os.mkdir(lower)
    make_tree(lower)
    probe = f"{base}/probe.py"
    with open(probe, "w") as f:
        f.write(probe_text)
    return lower, probe


@pytest.mark.parametrize("kind", ["bind", "cow"])
@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_dirfd_relative_calls_match_the_host(vu, kind, user):
    base = make_tmp(owner=user)
    try:
        lower, probe = tree_and_probe(base, PROBE)
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


TABLE_PROBE = r'''
import fcntl, os, subprocess, sys
top = sys.argv[1]
def say(*a):
    print(*a, flush=True)
def link(fd):
    return os.readlink("/proc/self/fd/%d" % fd)
# more than 16 directory numbers: the process comes to trap every
# descriptor call, and dups of merged directories are made in C too
dirs = [os.open(top + "/sub", os.O_RDONLY | os.O_DIRECTORY) for _ in range(20)]
for d in dirs[1:]:
    os.close(d)
d = dirs[0]
f = os.open(top + "/file", os.O_RDONLY)
d2 = os.dup(d)
d3 = fcntl.fcntl(d, fcntl.F_DUPFD_CLOEXEC, 30)
f2 = os.dup2(f, 40)
d4 = os.dup2(d, 41, inheritable=False)
say("links", link(d2) == link(d) == link(d3) == link(d4), link(f2) == link(f))
say("rel", sorted(os.listdir(d3)), os.stat("a", dir_fd=d4).st_size, os.read(f2, 5))
os.close(d)
say("after close", sorted(os.listdir(d2)), os.stat("a", dir_fd=d2).st_size)
fcntl.fcntl(d2, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
os.set_inheritable(f2, True)
# a child sees what was left open across exec, by its view path
out = subprocess.run(["/bin/sh", "-c",
                      "for n in %d %d %d %d %d; do readlink /proc/self/fd/$n || echo closed-$n; done"
                      % (d2, d3, d4, f, f2)], close_fds=False, capture_output=True, text=True)
say("child", out.stdout.replace(top, "@").split())
# numbers closed in C are reused for plain files: nothing of the old ones
os.close(d2); os.close(d3); os.close(d4)
p = os.open("/etc/hostname", os.O_RDONLY)
say("reused", p in (d2, d3, d4) or p < 60, link(p), os.fstat(p).st_size == os.stat("/etc/hostname").st_size)
'''


@pytest.mark.parametrize("kind", ["bind", "cow"])
def test_descriptor_table_changes_made_in_c(vu, kind):
    """close, dup, dup2, dup3, F_DUPFD_CLOEXEC and F_SETFD of mirrored
    descriptors, made by the C core and journaled: the mirror Python keeps
    must stay the kernel's table (/proc links by the view's path,
    close-on-exec across exec, relative calls through the duplicates, and
    the numbers reused for plain files afterwards)."""
    base = make_tmp()
    try:
        lower, probe = tree_and_probe(base, TABLE_PROBE)
        mnt = f"{base}/mnt"
        os.mkdir(mnt)
        # cow: a name only the top layer has (a merged listing shows it,
        # the lower directory the descriptors name does not)
        mount = (f"vumount -t vufs {lower} {mnt} && touch {mnt}/sub/top" if kind == "bind"
                 else f"mkdir {base}/store && vumount -t vufs -o cow {base}/store {lower}"
                      f" && touch {lower}/sub/top")
        where = mnt if kind == "bind" else lower
        res = vu(f"""
            vu_insmod vufs
            {mount}; echo "mount=$?"
            /usr/bin/python3 {probe} {where}
            """)
        v = dict(ln.split(" ", 1) for ln in res.out.splitlines()[1:] if " " in ln)
        assert "mount=0" in res.out and res.rc == 0, res
        if kind == "cow":
            # (below a plain bind a process traps no descriptor call: its
            # dups are the kernel's alone, /proc names them by host path)
            assert v.get("links") == "True True", res
        assert v.get("rel") == "['a', 'deep', 'top'] 5 b'file\\n'", res
        assert v.get("after") == "close ['a', 'deep', 'top'] 5", res
        # d2 (F_SETFD), d3 (F_DUPFD_CLOEXEC), d4 (dup3 O_CLOEXEC) and f
        # (Python's default O_CLOEXEC) are gone in the child; f2 stays
        child = v.get("child", "")
        assert child.startswith("['closed-") and child.count("closed-") == 4, res
        if kind == "cow":
            assert child.endswith("'@/file']"), res
        assert v.get("reused", "").endswith("/etc/hostname True"), res
    finally:
        shutil.rmtree(base, ignore_errors=True)
