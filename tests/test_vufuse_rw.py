"""vufuse end to end, writing: ext4 images mounted `-o rw+` through the
unmodified fuse2fs inside a real umvu session, changed with coreutils, then
checked OUTSIDE the view with e2fsck -fn and debugfs. Also: the view's end
unmounts and flushes; what a kernel FUSE mount would do with the caller's
umask, uid, timestamps, descriptors, statfs, shared maps and concurrent
callers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from conftest import USER_IDS, USERS
from test_vufuse_support import (
    MiB, NOBODY, VIEW_ENV, build_image, chown_tree, host, make_source_tree,
    nobody_tmp, sections, sha256_file, short, tool, values)


def uid_of(user) -> int:
    return 0 if user is None else NOBODY


@pytest.fixture
def area():
    d = nobody_tmp("vufuse-rw-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rw_image(area: Path, user, size="32M", name="rw.img") -> Path:
    """An ext4 image built from the common source tree, unprivileged; its
    root directory belongs to the user who will write into it."""
    src = area / "src"
    if not src.exists():
        make_source_tree(area)
    return build_image("ext4", src, area / name, size, root_owner=uid_of(user))


def mnt_dir(area: Path, name="mnt") -> Path:
    d = area / name
    d.mkdir(exist_ok=True)
    os.chown(d, NOBODY, NOBODY)
    return d


def debugfs(img, request: str) -> str:
    res = host([tool("debugfs"), "-R", request, img])
    return res.stdout.decode(errors="replace")


def e2fsck_ok(img) -> tuple[bool, str]:
    res = host([tool("e2fsck"), "-fn", img])
    return res.returncode == 0, res.stdout.decode(errors="replace")


def ls_l(img, path="/") -> dict:
    """debugfs 'ls -l' as name -> (inode, mode(octal str), size)."""
    out = {}
    for line in debugfs(img, f"ls -l {path}").splitlines():
        parts = line.split()
        if len(parts) < 9 or not parts[0].isdigit():
            continue
        # inode mode (links) uid gid size date time name
        ino, mode = parts[0], parts[1]
        rest = line.split(")", 1)[1].split()
        size = rest[2]
        name = " ".join(rest[5:])
        out[name] = (int(ino), mode, int(size))
    return out


# ---------------------------------------------------------------------------
# 2. ext4 rw+: the usual file operations, checked outside the view

@pytest.mark.parametrize("user", USERS, ids=USER_IDS)
def test_ext4_rw_plus_changes_reach_the_image(vu, area, user):
    if user is not None:
        # make sure uid 65534 can run umvu at all (conftest's check)
        vu.home(user)
    img = rw_image(area, user, size="128M")
    mnt = mnt_dir(area)
    rand = area / "rand50"
    rand.write_bytes(os.urandom(50 * MiB))
    os.chown(rand, NOBODY, NOBODY)
    want50 = sha256_file(rand)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        echo one > $M/new.txt; echo "create=$?"
        echo two >> $M/new.txt; echo "append=$?"
        echo "== appended"; cat $M/new.txt; echo "== -"
        truncate -s 3 $M/new.txt; echo "truncate=$?"
        echo "== truncated"; cat $M/new.txt; echo; echo "== -"
        mv $M/new.txt $M/renamed.txt; echo "rename=$?"
        ln $M/renamed.txt $M/hard.txt; echo "link=$?"
        ln -s renamed.txt $M/sym.txt; echo "symlink=$?"
        chmod 600 $M/renamed.txt; echo "chmod=$?"
        mkdir -p $M/a/b/c; echo "mkdirp=$?"
        echo deep > $M/a/b/c/f; echo "deep=$?"
        rm -rf $M/sub; echo "rmrf=$?"
        dd if={rand} of=$M/big50 bs=1M status=none; echo "dd=$?"
        echo "== stat"
        stat -c '%n %h %a %s %i' $M/renamed.txt $M/hard.txt; echo "== -"
        echo "sym=$(readlink $M/sym.txt)"
        echo "symcat=$(cat $M/sym.txt)"
        echo "== ls"
        ls $M
        echo "== sha"
        sha256sum < $M/big50
        echo "== end"
        vuumount $M; echo "umount=$?"
        """, user=user, env=VIEW_ENV)
    v = values(res.out)
    for step in ("mount", "create", "append", "truncate", "rename", "link",
                 "symlink", "chmod", "mkdirp", "deep", "rmrf", "dd", "umount"):
        assert v.get(step) == "0", f"{step} failed: {short(res)}"
    secs = sections(res.out)
    assert secs["appended"] == ["one", "two"], short(res)
    assert secs["truncated"] == ["one"], short(res)
    st = [line.split() for line in secs["stat"]]
    assert [s[1:4] for s in st] == [["2", "600", "3"]] * 2, short(res)
    assert st[0][4] == st[1][4], "the hard link has another inode"
    assert v.get("sym") == "renamed.txt" and v.get("symcat") == "one", short(res)
    assert "sub" not in secs["ls"] and "new.txt" not in secs["ls"], short(res)
    assert secs["sha"][0].split()[0] == want50, "50 MiB file read back differs"
    assert res.rc == 0, short(res)

    # outside the view: a clean file system holding all of that
    ok, report = e2fsck_ok(img)
    assert ok, f"e2fsck -fn after the session:\n{report}"
    root = ls_l(img)
    for name in ("renamed.txt", "hard.txt", "sym.txt", "a", "big50", "hello.txt"):
        assert name in root, f"{name} missing in the image: {sorted(root)}"
    assert "sub" not in root and "new.txt" not in root, sorted(root)
    assert root["renamed.txt"][0] == root["hard.txt"][0]
    assert root["renamed.txt"][1] == "100600", root["renamed.txt"]
    assert root["renamed.txt"][2] == 3 and root["big50"][2] == 50 * MiB
    assert root["sym.txt"][1].startswith("120"), root["sym.txt"]
    assert debugfs(img, "cat /renamed.txt") == "one"
    assert debugfs(img, "cat /a/b/c/f") == "deep\n"
    dumped = area / "dumped50"
    host([tool("debugfs"), "-R", f"dump /big50 {dumped}", img])
    assert sha256_file(dumped) == want50, "the 50 MiB file in the image differs"


# ---------------------------------------------------------------------------
# 6. the end of the view unmounts and flushes

def _daemons_of(path: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"fuse2fs" and \
                os.fsencode(path) in argv:
            pids.append(int(entry))
    return pids


def test_view_end_without_vuumount_flushes(vu, area):
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    payload = area / "payload"
    payload.write_bytes(os.urandom(1000000))
    os.chown(payload, NOBODY, NOBODY)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M || exit 91
        echo data > $M/newfile
        mkdir $M/newdir
        cp {payload} $M/newdir/payload
        rm $M/hello.txt
        exit 7
        """, env=VIEW_ENV)
    assert res.rc == 7, f"umvu did not return the command's status: {short(res)}"
    assert _daemons_of(str(img)) == [], "fuse2fs outlived the view"
    ok, report = e2fsck_ok(img)
    assert ok, f"e2fsck -fn after a view that ended mounted:\n{report}"
    root = ls_l(img)
    assert "newfile" in root and "newdir" in root and "hello.txt" not in root, root
    assert debugfs(img, "cat /newfile") == "data\n"
    out = area / "payload.out"
    host([tool("debugfs"), "-R", f"dump /newdir/payload {out}", img])
    assert out.read_bytes() == payload.read_bytes()


# ---------------------------------------------------------------------------
# what a kernel FUSE mount does and vufuse should do too

def test_umask_applies_to_new_files_and_dirs(vu, area):
    """The kernel applies the caller's umask (or sends it to the daemon) for
    mkdir/creat on FUSE: `umask 077; mkdir d` gives 0700, like on any other
    file system (natively mounted fuse2fs does this)."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        umask 077
        mkdir $M/d; touch $M/f
        mkdir {area}/hostd; touch {area}/hostf
        echo "fuse=$(stat -c %a $M/d $M/f | tr '\\n' ' ')"
        echo "host=$(stat -c %a {area}/hostd {area}/hostf | tr '\\n' ' ')"
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("host") == "700 600 ", short(res)
    assert v.get("fuse") == v.get("host"), (
        f"umask 077 ignored on vufuse: mkdir/touch gave {v.get('fuse')}, "
        f"the host gives {v.get('host')}")


def test_files_created_by_unprivileged_user_are_theirs(vu, area):
    """FUSE requests carry the caller's uid/gid: fuse2fs gives new files the
    caller's owner and enforces permissions (as it does when mounted
    natively). As uid 65534, new files must belong to 65534 and root's
    0700 lost+found must not be readable or writable."""
    vu.home(NOBODY)
    img = rw_image(area, NOBODY)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        echo "id=$(id -u)"
        echo x > $M/mine; mkdir $M/mydir
        echo "owner=$(stat -c '%u:%g' $M/mine)"
        echo "dirowner=$(stat -c '%u:%g' $M/mydir)"
        echo "lfmode=$(stat -c '%u %a' $M/lost+found)"
        ls $M/lost+found; echo "lsroot=$?"
        touch $M/lost+found/intruder; echo "touchroot=$?"
        vuumount $M
        """, user=NOBODY, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0" and v.get("id") == "65534", short(res)
    assert v.get("lfmode") == "0 700", short(res)
    assert v.get("owner") == "65534:65534", (
        f"a file created by uid 65534 belongs to {v.get('owner')}: {short(res)}")
    assert v.get("dirowner") == "65534:65534", short(res)
    assert v.get("lsroot") != "0", "uid 65534 listed root's 0700 lost+found"
    assert v.get("touchroot") != "0", "uid 65534 created a file in root's 0700 lost+found"


def test_explicit_timestamps_are_kept(vu, area):
    """utimensat with explicit times (touch -d, cp -p) must store them."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        touch -m -d @1000000000 $M/hello.txt; echo "touch=$?"
        echo "mtime=$(stat -c %Y $M/hello.txt)"
        touch -d @1100000000 {area}/stamp
        cp -p {area}/stamp $M/stamp; echo "cp=$?"
        echo "cpmtime=$(stat -c %Y $M/stamp)"
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0" and v.get("touch") == "0", short(res)
    assert v.get("mtime") == "1000000000", (
        f"touch -d @1000000000 gave mtime {v.get('mtime')}")
    assert v.get("cpmtime") == "1100000000", f"cp -p gave mtime {v.get('cpmtime')}"
    assert "mtime: 0x3b9aca00" in debugfs(img, "stat /hello.txt")


def test_descriptor_metadata_calls_reach_the_file(vu, area):
    """fchmod, fchown and futimens on a descriptor of a file in the mount
    must change that file (they return 0, so they must not be no-ops)."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        python3 - $M/hello.txt <<'EOF'
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR)
os.fchmod(fd, 0o640)
print("fchmod=%o" % (os.stat(p).st_mode & 0o7777))
os.fchown(fd, 123, 456)
st = os.stat(p)
print("fchown=%d:%d" % (st.st_uid, st.st_gid))
os.utime(fd, ns=(10**18, 10**18))
print("futimens=%d" % os.stat(p).st_mtime)
os.close(fd)
EOF
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("fchmod") == "640", f"fchmod on a vufuse descriptor: {short(res)}"
    assert v.get("fchown") == "123:456", f"fchown on a vufuse descriptor: {short(res)}"
    assert v.get("futimens") == "1000000000", f"futimens on a vufuse descriptor: {short(res)}"


def test_statfs_df(vu, area):
    """statfs(2) is FUSE_STATFS on a kernel mount: df works."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        df -k $M; echo "df=$?"
        echo "blocks=$(stat -f -c '%b %S' $M)"
        vuumount $M
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    assert v.get("df") == "0", f"df on a vufuse mount failed: {short(res)}"
    blocks, bsize = v.get("blocks", "0 0").split()
    assert int(blocks) * int(bsize) > 20 * MiB, short(res)


def test_shared_mmap_writes_reach_the_image(vu, area):
    """A MAP_SHARED, PROT_WRITE mapping of a file in a rw+ mount: what was
    written through it is in the file after munmap/close."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        printf 0123456789abcdef > $M/mm
        python3 - $M/mm <<'EOF'
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 16)
m[0:4] = b"WXYZ"
m.flush()
m.close()
os.close(fd)
print("readback=" + open(sys.argv[1], "rb").read().decode())
EOF
        vuumount $M; echo "umount=$?"
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0" and v.get("umount") == "0", short(res)
    assert v.get("readback") == "WXYZ456789abcdef", short(res)
    assert debugfs(img, "cat /mm") == "WXYZ456789abcdef", short(res)


def test_concurrent_readers(vu, area):
    """Several processes reading files of the mount at the same time must
    all read the files' data."""
    src = area / "csrc"
    src.mkdir()
    want = {}
    for i in range(6):
        data = os.urandom(700000)
        (src / f"f{i}").write_bytes(data)
        want[f"f{i}"] = hashlib.sha256(data).hexdigest()
    chown_tree(src)
    img = build_image("ext4", src, area / "c.img")
    mnt = mnt_dir(area)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 {img} $M; echo "mount=$?"
        cd $M
        echo "== sums"
        for round in 1 2 3; do
            for f in f0 f1 f2 f3 f4 f5; do sha256sum $f & done; wait
        done
        echo "== end"
        cd /; vuumount $M
        """, env=VIEW_ENV)
    assert values(res.out).get("mount") == "0", short(res)
    lines = sections(res.out)["sums"]
    assert len(lines) == 18, short(res)
    wrong = [line for line in lines if want[line.split()[1]] != line.split()[0]]
    assert not wrong, (f"{len(wrong)} of 18 concurrent reads got wrong data "
                       f"(e3b0c442... is the hash of nothing):\n" + "\n".join(wrong))


def test_concurrent_writers(vu, area):
    """Several processes writing new files of the mount at the same time."""
    img = rw_image(area, None)
    mnt = mnt_dir(area)
    payload = area / "payload"
    payload.write_bytes(os.urandom(1500000))
    os.chown(payload, NOBODY, NOBODY)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M; echo "mount=$?"
        for i in 1 2 3 4 5; do cat {payload} > $M/par$i & done; wait
        echo "== sizes"
        stat -c '%n %s' $M/par1 $M/par2 $M/par3 $M/par4 $M/par5
        echo "== end"
        vuumount $M; echo "umount=$?"
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0" and v.get("umount") == "0", short(res)
    sizes = sections(res.out)["sizes"]
    assert all(line.endswith(" 1500000") for line in sizes) and len(sizes) == 5, (
        "concurrent writers lost data:\n" + "\n".join(sizes))
    root = ls_l(img)
    assert [root[f"par{i}"][2] for i in range(1, 6)] == [1500000] * 5, root
    ok, report = e2fsck_ok(img)
    assert ok, report


# ---------------------------------------------------------------------------
# symlinks named without being followed (issue 13, item 11)

SYMLINK_NOFOLLOW = r'''
import ctypes, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
link = sys.argv[1]
fd = os.open(link, os.O_PATH | os.O_NOFOLLOW)
print("opath", "link" if stat.S_ISLNK(os.fstat(fd).st_mode) else "other")
r = libc.fchmodat(-100, link.encode(), 0o700, 0x100)       # glibc: O_PATH first
print("fchmodat", os.strerror(ctypes.get_errno()) if r else "ok")
r = libc.syscall(452, -100, link.encode(), 0o700, 0x100)   # fchmodat2
print("fchmodat2", os.strerror(ctypes.get_errno()) if r else "ok")
'''


def test_symlink_nofollow_and_tar_x(vu, area):
    """open(O_PATH|O_NOFOLLOW) of a symlink gives a descriptor of the link
    and fchmodat(AT_SYMLINK_NOFOLLOW) says EOPNOTSUPP, as the kernel does
    (both said ELOOP), so tar x of symlinks into an image works."""
    vu.home(NOBODY)
    img = rw_image(area, NOBODY)
    mnt = mnt_dir(area)
    script = area / "nofollow.py"
    script.write_text(SYMLINK_NOFOLLOW)
    res = vu(f"""
        M={mnt}
        vu_insmod vufuse || exit 90
        vumount -t vufuseext4 -o rw+ {img} $M || exit 91
        ln -s hello.txt $M/lnk
        python3 {script} $M/lnk
        mkdir {area}/t && cd {area}/t && touch a && ln -s a b && ln -s missing c &&
            tar cf {area}/t.tar . && cd /
        mkdir $M/x && tar xf {area}/t.tar -C $M/x; echo "tar=$?"
        echo "b=$(readlink $M/x/b) c=$(readlink $M/x/c)"
        vuumount $M
        """, user=NOBODY, env=VIEW_ENV)
    out = res.out
    assert "opath link" in out, short(res)
    assert "fchmodat Operation not supported" in out, short(res)
    assert "fchmodat2 Operation not supported" in out, short(res)
    assert "tar=0" in out and "b=a c=missing" in out, short(res)
