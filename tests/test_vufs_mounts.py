"""Mount semantics of vufs (umount of busy mounts, /proc/mounts, mount(8)
through vusu) and refused mounts (bad sources, targets and options)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import NOBODY, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir


@pytest.fixture
def srctgt(tdir):
    write(f"{tdir}/src/file", "in-src\n")
    write(f"{tdir}/src/sub/x", "x\n")
    os.mkdir(f"{tdir}/tgt")
    return tdir


BUSY = "Device or resource busy"


def test_umount_busy_cwd_same_shell(vu, srctgt):
    T = srctgt
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        cd $T/tgt/sub
        vuumount $T/tgt; echo "busy=$?"
        cat x
        cd /
        vuumount $T/tgt; echo "free=$?"
        ls $T/tgt | wc -l
        """, env={"T": T})
    assert res.lines == ["busy=1", "x", "free=0", "0"], res
    assert res.err == f"vuumount: {T}/tgt: {BUSY}\n", res


def test_umount_busy_background_process_and_lazy(vu, srctgt):
    T = srctgt
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        mkfifo $T/ready
        (cd $T/tgt && echo ok > $T/ready && exec sleep 60) &
        read line < $T/ready
        vuumount $T/tgt; echo "busy=$?"
        grep -c " $T/tgt vufs " /proc/mounts
        vuumount -l $T/tgt; echo "lazy=$?"
        grep -c " $T/tgt vufs " /proc/mounts
        ls $T/tgt | wc -l
        kill %1; wait
        """, env={"T": T})
    assert res.lines == ["busy=1", "1", "lazy=0", "0", "0"], res
    assert f"vuumount: {T}/tgt: {BUSY}\n" in res.err, res


def test_umount_busy_open_descriptor(vu, srctgt):
    T = srctgt
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        exec 3< $T/tgt/file
        vuumount $T/tgt; echo "busy=$?"
        exec 3<&-
        vuumount $T/tgt; echo "free=$?"
        """, env={"T": T})
    assert res.lines == ["busy=1", "free=0"], res


@pytest.mark.skipif(os.path.lexists("/unreal"), reason="the host has a /unreal")
def test_proc_mounts_and_mountinfo_list_virtual_mounts(vu, srctgt):
    """The kernel's lines (read in the same session before the mounts, while
    no vufs mount exists), then one line per virtual mount, in mount order."""
    T = srctgt
    os.mkdir(f"{T}/cow")
    res = vu("""\
        vu_insmod vufs
        echo "== host-mounts"; cat /proc/mounts
        echo "== host-mountinfo"; cat /proc/self/mountinfo
        vumount -t vufs / /unreal || echo MOUNT-FAILED
        vumount -t vufs -o cow $T/cow $T/tgt || echo MOUNT-FAILED
        echo "== mounts"; cat /proc/mounts
        echo "== self-mounts"; cat /proc/self/mounts
        echo "== mountinfo"; cat /proc/self/mountinfo
        echo "== mount"; mount
        echo "== findmnt"; findmnt -n -o TARGET,FSTYPE $T/tgt
        """, env={"T": T})
    s = res.sections()
    host = s["host-mounts"].split("\n")
    assert host and not any(" vufs " in line for line in host), res
    for key in ("mounts", "self-mounts"):
        lines = s[key].split("\n")
        assert lines[:len(host)] == host, res
        assert lines[len(host):] == ["/ /unreal vufs rw 0 0",
                                     f"{T}/cow {T}/tgt vufs rw,cow 0 0"], res
    info_host = s["host-mountinfo"].split("\n")
    info = s["mountinfo"].split("\n")
    assert [line.split()[4] for line in info[:len(info_host)]] == \
        [line.split()[4] for line in info_host], res
    extra = info[len(info_host):]
    assert [(f[4], f[f.index("-") + 1], f[f.index("-") + 2]) for f in
            (line.split() for line in extra)] == \
        [("/unreal", "vufs", "/"), (f"{T}/tgt", "vufs", f"{T}/cow")], res
    mount = s["mount"].split("\n")
    assert mount[-2:] == ["/ on /unreal type vufs (rw)",
                          f"{T}/cow on {T}/tgt type vufs (rw,cow)"], res
    assert s["findmnt"].split() == [f"{T}/tgt", "vufs"], res


def test_mount8_through_vusu(vu, udir):
    """Seed 002: mount(8) by an unprivileged user with unrealuidgid. It once
    stopped at its own check that a plain user cannot setuid(0) ("drop
    permissions failed"): with the kernel's rules for virtual ids that check
    holds, and mount(8) goes on to mount(2), which the view answers; through
    vusu it works as root's."""
    T = udir
    for d in ("c", "c2", "etc"):
        os.mkdir(f"{T}/{d}")
        os.chown(f"{T}/{d}", NOBODY, NOBODY)
    write(f"{T}/etc/conf", "orig\n")
    os.chown(f"{T}/etc/conf", NOBODY, NOBODY)
    res = vu("""\
        vu_insmod vufs unrealuidgid
        mount -t vufs -o cow $T/c $T/etc; echo "plain=$?"
        vusu -c "mount -t vufs -o cow $T/c2 $T/etc; echo vusu=\\$?; id -u"
        echo changed > $T/etc/conf; cat $T/etc/conf
        grep -c " $T/etc vufs rw,cow " /proc/mounts
        """, user=NOBODY, env={"T": T})
    assert res.lines == ["plain=0", "vusu=0", "0", "changed", "2"], res
    with open(f"{T}/etc/conf") as f:
        assert f.read() == "orig\n"
    with open(f"{T}/c2/conf") as f:
        assert f.read() == "changed\n"


# ---- refused mounts ---------------------------------------------------------------

BAD = {
    "missing-source": ("vumount -t vufs $T/nonexistent $T/tgt",
                       "vumount: $T/tgt: No such file or directory", None),
    "missing-target-dir": ("vumount -t vufs $T/src $T/nodir/tgt",
                           "vumount: $T/nodir/tgt: No such file or directory", None),
    "missing-cow-target": ("vumount -t vufs -o cow $T/src $T/nonexistent",
                           "vumount: $T/nonexistent: No such file or directory", None),
    "unknown-option": ("vumount -t vufs -o foo $T/src $T/tgt",
                       "vumount: $T/tgt: Invalid argument", "vufs: unknown option foo"),
    "except-dotdot": ("vumount -t vufs -o except=../x $T/src $T/tgt",
                      "vumount: $T/tgt: Invalid argument", "except=../x"),
    "except-relative": ("vumount -t vufs -o except=x $T/src $T/tgt",
                        "vumount: $T/tgt: Invalid argument", "except=x"),
    "two-modes": ("vumount -t vufs -o cow,merge $T/src $T/tgt",
                  "vumount: $T/tgt: Invalid argument", "vufs:"),
    "mode-with-value": ("vumount -t vufs -o merge=1 $T/src $T/tgt",
                        "vumount: $T/tgt: Invalid argument", "vufs:"),
    "hypervisor-tmpdir": ('vumount -t vufs $T/src "$HV/x"',
                          'vumount: $HV/x: Device or resource busy', None),
    "hypervisor-tmpdir-itself": ('vumount -t vufs $T/src "$HV"',
                                 'vumount: $HV: Device or resource busy', None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_refused_mount(vu, srctgt, case):
    T = srctgt
    command, message, log = BAD[case]
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        exec 3< /proc/self/mounts      # the hypervisor writes it in its dir
        HV=$(dirname /tmp/umvu-*/mounts.$$); exec 3<&-
        echo "HV=$HV"
        cat /proc/mounts > $T/before
        {command}; echo "rc=$?"
        cat /proc/mounts > $T/after
        cmp -s $T/before $T/after && echo unchanged
        ls $T/src
        """, env={"T": T})
    assert "MOUNT-FAILED" not in res.out, res
    hv = res.lines[0][3:]
    assert hv.startswith("/tmp/umvu-") and os.path.isabs(hv), res
    assert res.lines[1:] == ["rc=1", "unchanged", "file", "sub"], res
    expected = message.replace("$T", T).replace("$HV", hv)
    assert expected in res.err.splitlines(), res
    if log is not None:
        assert any(line.startswith("umvu: ") and log in line
                   for line in res.err.splitlines()), res
    assert not os.path.exists(f"{T}/nodir")


def test_umount_through_the_name_used_to_mount(vu, srctgt):
    """mount(2) follows a symlink to the mount point, and so does umount2(2)
    (without UMOUNT_NOFOLLOW): unmounting by the same name must work."""
    T = srctgt
    os.symlink("tgt", f"{T}/tlink")
    res = vu("""\
        vu_insmod vufs
        cd $T
        vumount -t vufs ./src/ tlink; echo "mount=$?"
        grep -c " $T/tgt vufs " /proc/mounts
        cat tgt/file
        vuumount tlink; echo "umount=$?"
        grep -c " $T/tgt vufs " /proc/mounts
        """, env={"T": T})
    assert res.lines == ["mount=0", "1", "in-src", "umount=0", "0"], res


@pytest.mark.parametrize("mode", ["bind", "cow"])
def test_mount_point_cannot_be_removed_or_renamed(vu, tdir, mode):
    """As for a kernel mount point, rmdir and rename of a vufs mount point
    are EBUSY: they must never reach (and destroy) the SOURCE directory."""
    T = tdir
    os.makedirs(f"{T}/empty")
    os.makedirs(f"{T}/tgt")
    os.makedirs(f"{T}/cow")
    write(f"{T}/src/file", "data\n")
    src = {"bind": ("$T/empty", "$T/src"), "cow": ("$T/cow", "$T/cow")}[mode]
    opts = "-o cow " if mode == "cow" else ""
    res = vu(f"""\
        vu_insmod vufs
        vumount -t vufs {opts}{src[0]} $T/tgt || echo MOUNT-FAILED
        rmdir $T/tgt; echo "rmdir=$?"
        vuumount $T/tgt && vumount -t vufs {opts}{src[1]} $T/tgt || echo MOUNT-FAILED
        mv $T/tgt $T/moved; echo "mv=$?"
        python3 -c 'import os; os.rename("'$T'/tgt", "'$T'/moved2")'; echo "rename=$?"
        ls $T/tgt
        """, env={"T": T})
    assert "MOUNT-FAILED" not in res.out, res
    assert res.lines[:3] == ["rmdir=1", "mv=1", "rename=1"], res
    assert f"rmdir: failed to remove '{T}/tgt': Device or resource busy" in res.err, res
    assert "OSError: [Errno 16] Device or resource busy" in res.err, res
    assert os.path.isdir(f"{T}/empty") and os.path.isdir(f"{T}/cow")
    if mode == "bind":
        assert os.listdir(f"{T}/src") == ["file"], res
    assert not os.path.exists(f"{T}/moved") and not os.path.exists(f"{T}/moved2")


def test_file_mount_point_cannot_be_unlinked(vu, tdir):
    """The tutorial's file-over-file mount: `rm` of the mount point is EBUSY
    (as for a kernel bind mount of a file); the SOURCE file survives."""
    T = tdir
    write(f"{T}/new.conf", "new\n")
    write(f"{T}/target.conf", "old\n")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/new.conf $T/target.conf || echo MOUNT-FAILED
        rm $T/target.conf; echo "rm=$?"
        cat $T/target.conf
        """, env={"T": T})
    assert res.lines == ["rm=1", "new"], res
    assert f"rm: cannot remove '{T}/target.conf': Device or resource busy" in res.err, res
    assert sorted(os.listdir(T)) == ["new.conf", "target.conf"]
