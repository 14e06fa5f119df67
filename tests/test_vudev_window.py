"""The C core's windows (csrc/window.c) answer a vudev device's data calls
exactly as the Python path does: the same probe program runs on fresh,
identical images with windows on and with UMVU_WINDOWS=0 (every call
through ServedCalls and the module's ServedFile), and both runs must print
the same results and leave the same image. The probe works at a
partition's edges (ENOSPC at the end, writes cut short across it, reads
that stop there), with every data call (read, write, pread64, pwrite64,
readv, writev, preadv, pwritev, preadv2, pwritev2, lseek with every
whence), the offset shared by dup and fork, EBADF by access mode, EPERM
after BLKROSET, EFAULT for a bad buffer, and its other partition and the
bytes around them must stay as they were.
"""

from __future__ import annotations

import shutil

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from test_vudev import MiB, SECTOR, range_sums, outside, sfdisk
from test_vufuse_support import NOBODY, VIEW_ENV, as_nobody, nobody_tmp, short

#: partition 1 (the probe's) and partition 2 (must not change), in sectors
P1 = (2048, 8191)           # an odd size: the end is not page aligned
P2 = (10240, 4096)
IMAGE = 8 * MiB

PROBE = r'''
import ctypes, fcntl, os, struct, sys, hashlib
dev = sys.argv[1]
size = None
libc = ctypes.CDLL(None, use_errno=True)
def show(name, fn):
    try:
        r = fn()
    except OSError as e:
        r = "E" + (os.strerror(e.errno) if e.errno else "?")
    if isinstance(r, (bytes, bytearray)):
        r = "%d:%s" % (len(r), hashlib.sha256(r).hexdigest()[:12])
    print("%s=%s" % (name, r), flush=True)
fd = os.open(dev, os.O_RDWR)
size = os.lseek(fd, 0, os.SEEK_END)
show("size", lambda: size)
show("seek_data0", lambda: os.lseek(fd, 0, os.SEEK_DATA))
show("seek_hole0", lambda: os.lseek(fd, 0, os.SEEK_HOLE))
show("seek_data_end", lambda: os.lseek(fd, size, os.SEEK_DATA))
show("seek_bad_whence", lambda: os.lseek(fd, 0, 9))
show("seek_negative", lambda: os.lseek(fd, -1, os.SEEK_SET))
show("seek_cur_back", lambda: (os.lseek(fd, 100, os.SEEK_SET), os.lseek(fd, -50, os.SEEK_CUR))[1])
pattern = bytes(range(256)) * 5000
show("pwrite_start", lambda: os.pwrite(fd, pattern[:70000], 0))
show("pwrite_across", lambda: os.pwrite(fd, pattern[:100], size - 10))
show("pwrite_at_end", lambda: os.pwrite(fd, b"x", size))
show("pwrite_past", lambda: os.pwrite(fd, b"x", size + 4096))
show("pwrite_empty_end", lambda: os.pwrite(fd, b"", size))
show("pread_across", lambda: os.pread(fd, 100, size - 10))
show("pread_end", lambda: os.pread(fd, 100, size))
show("pread_past", lambda: os.pread(fd, 100, size + 999))
show("pread_negative", lambda: os.pread(fd, 10, -5))
show("pread_big", lambda: os.pread(fd, 3 << 20, 0))
os.lseek(fd, size - 3, os.SEEK_SET)
show("write_across", lambda: os.write(fd, b"ABCDEFGH"))
show("pos_after", lambda: os.lseek(fd, 0, os.SEEK_CUR))
show("write_at_end", lambda: os.write(fd, b"Z"))
show("read_at_end", lambda: os.read(fd, 10))
os.lseek(fd, 1000, os.SEEK_SET)
show("writev", lambda: os.writev(fd, [b"one", b"", b"three", pattern[:5000]]))
show("pos_writev", lambda: os.lseek(fd, 0, os.SEEK_CUR))
os.lseek(fd, 1000, os.SEEK_SET)
bufs = [bytearray(3), bytearray(0), bytearray(5), bytearray(7000)]
show("readv", lambda: os.readv(fd, bufs))
show("readv_data", lambda: b"".join(bufs))
os.lseek(fd, size - 6, os.SEEK_SET)
show("writev_across", lambda: os.writev(fd, [b"1234", b"5678", b"9"]))
show("pwritev", lambda: os.pwritev(fd, [b"pw", b"itev"], 4097))
show("pwritev_across", lambda: os.pwritev(fd, [b"abc", b"defgh"], size - 4))
bufs = [bytearray(4), bytearray(4)]
show("preadv", lambda: os.preadv(fd, bufs, 4095))
show("preadv_data", lambda: b"".join(bufs))
show("preadv_across", lambda: os.preadv(fd, [bytearray(8), bytearray(8)], size - 12))
show("preadv2", lambda: os.preadv(fd, [bytearray(16)], 4090, os.RWF_HIPRI))
show("pwritev2", lambda: os.pwritev(fd, [b"v2v2"], 8192, os.RWF_DSYNC))
# the offset is the open file's: shared by dup and by fork
os.lseek(fd, 12345, os.SEEK_SET)
fd2 = os.dup(fd)
show("dup_pos", lambda: os.lseek(fd2, 0, os.SEEK_CUR))
show("dup_read", lambda: os.read(fd2, 10))
show("pos_after_dup_read", lambda: os.lseek(fd, 0, os.SEEK_CUR))
pid = os.fork()
if pid == 0:
    os.write(fd, b"child wrote this")
    os._exit(0)
os.waitpid(pid, 0)
show("pos_after_child", lambda: os.lseek(fd, 0, os.SEEK_CUR))
show("child_data", lambda: os.pread(fd, 16, 12355))
# a bad buffer
show("read_efault", lambda: (libc.read(fd, ctypes.c_void_p(8), 100), ctypes.get_errno())[1] if libc.read(fd, ctypes.c_void_p(8), 100) < 0 else "no")
show("write_efault", lambda: (libc.write(fd, ctypes.c_void_p(8), 100), ctypes.get_errno())[1])
# access modes
ro = os.open(dev, os.O_RDONLY)
wo = os.open(dev, os.O_WRONLY)
show("ro_write", lambda: os.write(ro, b"x"))
show("ro_pwritev", lambda: os.pwritev(ro, [b"x"], 0))
show("wo_read", lambda: os.read(wo, 1))
show("wo_write", lambda: os.write(wo, b"first"))
show("ro_read", lambda: os.read(ro, 5))
# BLKROSET makes every open of the device read-only, then writable again
show("roset", lambda: fcntl.ioctl(fd, 0x125d, struct.pack("i", 1)) and 0)
show("write_after_roset", lambda: os.pwrite(fd, b"no", 0))
show("write_other_open_after_roset", lambda: os.pwrite(wo, b"no", 0))
show("rounset", lambda: fcntl.ioctl(fd, 0x125d, struct.pack("i", 0)) and 0)
show("write_after_rounset", lambda: os.pwrite(wo, b"yes", 0))
# O_APPEND set later: a block device appends at its end, which is full
fl = fcntl.fcntl(wo, fcntl.F_GETFL)
fcntl.fcntl(wo, fcntl.F_SETFL, fl | os.O_APPEND)
show("append_write", lambda: os.write(wo, b"tail"))
show("append_pread", lambda: os.pread(fd, 4, 0))
os.fsync(fd)
with open(dev, "rb") as f:
    show("whole", f.read)
'''


def make_image(base):
    """An image made by uid 65534 (sfdisk), its second partition random."""
    img = base / "disk.img"
    as_nobody(["truncate", "-s", str(IMAGE), img])
    sfdisk(img, f"label: dos\nstart={P1[0]}, size={P1[1]}, type=83\n"
                f"start={P2[0]}, size={P2[1]}, type=83\n")
    as_nobody(["sh", "-c", f"head -c {P2[1] * SECTOR} /dev/urandom | "
               f"dd of={img} bs=512 seek={P2[0]} conv=notrunc status=none"])
    return img


def probe_run(vu, base, name, windows: bool, user, device: str):
    d = base / name
    d.mkdir()
    shutil.chown(d, NOBODY, NOBODY)
    img = d / "disk.img"
    as_nobody(["cp", base / "disk.img", img])
    probe = d / "probe.py"
    probe.write_text(PROBE)
    mount = (f"vumount -t vudevpartx {img} /dev/sdx" if device == "partition" else
             f"vumount -t vudevramdisk -o size={P1[1]} none /dev/sdx1")
    env = dict(VIEW_ENV, UMVU_WINDOWS="1" if windows else "0")
    res = vu(f"""
        vu_insmod vudev
        {mount}; echo "mount=$?"
        /usr/bin/python3 {probe} /dev/sdx1
        """, env=env, user=user)
    return res, img


@pytest.mark.parametrize("device,user", [("partition", None), ("partition", NOBODY),
                                         ("ramdisk", None)],
                         ids=["partition-root", "partition-nobody", "ramdisk"])
def test_window_answers_as_python(vu, device, user):
    base = nobody_tmp("vudev-window-")
    try:
        before = range_sums(make_image(base), outside([P1], IMAGE))
        fast, fast_img = probe_run(vu, base, "fast", True, user, device)
        slow, slow_img = probe_run(vu, base, "slow", False, user, device)
        assert "mount=0" in fast.out and "mount=0" in slow.out, short(fast)
        lines = [ln for ln in fast.out.splitlines() if "=" in ln]
        assert len(lines) > 50, short(fast)
        assert fast.out == slow.out, f"C window:\n{fast.out}\nPython:\n{slow.out}"
        v = dict(ln.split("=", 1) for ln in lines)
        size = P1[1] * SECTOR
        # the kernel's block device semantics, as the Python path has them
        assert v["size"] == str(size)
        assert v["pwrite_across"] == "10" and v["pwrite_at_end"] == "ENo space left on device"
        assert v["write_across"] == "3" and v["pos_after"] == str(size)
        assert v["read_at_end"].startswith("0:") and v["pread_negative"] == "EInvalid argument"
        assert v["pos_after_dup_read"] == "12355" and v["pos_after_child"] == "12371"
        assert v["read_efault"] == "14" and v["ro_write"] == "EBad file descriptor"
        assert v["write_after_roset"] == "EOperation not permitted"
        assert v["write_other_open_after_roset"] == "EOperation not permitted"
        assert v["write_after_rounset"] == "3"
        assert v["append_write"] == "ENo space left on device"
        if device == "partition":
            for img in (fast_img, slow_img):     # nothing outside partition 1
                assert range_sums(img, outside([P1], IMAGE)) == before
            with open(fast_img, "rb") as a, open(slow_img, "rb") as b:
                assert a.read() == b.read()     # both runs left the same image
    finally:
        shutil.rmtree(base, ignore_errors=True)


FDS_PROBE = r'''
import os, sys, fcntl
dev, plain = sys.argv[1], sys.argv[2]
fd = os.open(dev, os.O_RDONLY)
show = lambda k, v: print("%s=%s" % (k, v), flush=True)
show("dev", os.pread(fd, 4, 0))
# a dup to a far number, by dup2 and by F_DUPFD: calls on it are the device's
os.dup2(fd, 40)
show("dup2", os.pread(40, 4, 0))
far = fcntl.fcntl(fd, fcntl.F_DUPFD, 50)
show("dupfd", (far, os.pread(far, 4, 0)))
# close_range closes numbers it does not name: the reused number is plain
os.closerange(40, 60)
again = os.open(plain, os.O_RDONLY)
os.dup2(again, 40)
show("reused", os.pread(40, 4, 0))
# a plain descriptor dup'ed over a device descriptor
os.dup2(again, fd)
show("over", os.pread(fd, 4, 0))
# more device descriptors than one filter each: all calls trapped, still right
fds = [os.open(dev, os.O_RDONLY) for _ in range(24)]
show("many", sorted(set(os.pread(f, 4, 0) for f in fds)))
for f in fds:
    os.close(f)
f = os.open(plain, os.O_RDONLY)
show("after_many", os.pread(f, 4, 0))
pid = os.fork()
if pid == 0:
    d = os.open(dev, os.O_RDONLY)
    os.write(1, b"child=%r\n" % os.pread(d, 4, 0))
    os._exit(0)
os.waitpid(pid, 0)
'''


def test_descriptor_filters_follow_the_numbers(vu):
    """A process holding a device descriptor stops only on calls naming
    it (one filter per number): dup2, F_DUPFD, close_range, a plain file
    dup'ed over it and more numbers than filters all keep the answers
    right, in the shell and in the programs it starts."""
    base = nobody_tmp("vudev-fds-")
    try:
        probe = base / "fds.py"
        probe.write_text(FDS_PROBE)
        plain = base / "plain"
        plain.write_bytes(b"PLAN" * 100)
        res = vu(f"""
            vu_insmod vudev
            vumount -t vudevramdisk -o size=64K none /dev/rd; echo "mount=$?"
            printf DEVI > /dev/rd
            exec 3</dev/rd 7<&3
            echo "shell=$(head -c 4 <&7)"
            echo "shellplain=$(head -c 4 {plain})"
            exec 3<&- 7<&-
            exec 3<{plain}
            echo "shellreused=$(head -c 4 <&3)"
            /usr/bin/python3 {probe} /dev/rd {plain}
            """, env=VIEW_ENV)
        v = dict(ln.split("=", 1) for ln in res.out.splitlines() if "=" in ln)
        assert v.get("mount") == "0", short(res)
        assert v.get("shell") == "DEVI" and v.get("shellplain") == "PLAN", short(res)
        assert v.get("shellreused") == "PLAN", short(res)
        assert v.get("dev") == "b'DEVI'" and v.get("dup2") == "b'DEVI'", short(res)
        assert v.get("dupfd", "").endswith("b'DEVI')"), short(res)
        assert v.get("reused") == "b'PLAN'" and v.get("over") == "b'PLAN'", short(res)
        assert v.get("many") == "[b'DEVI']" and v.get("after_many") == "b'PLAN'", short(res)
        assert v.get("child") == "b'DEVI'", short(res)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_exec_forgets_closed_windows(vu):
    """A device descriptor closed by exec (close-on-exec) and its number
    reused by the new program for a plain file: reads are the file's, not
    the device's (the C core forgets a thread's table at exec until Python
    has replayed it)."""
    base = nobody_tmp("vudev-exec-")
    try:
        plain = base / "plain"
        plain.write_bytes(b"PLAN" * 10)
        probe = base / "exec.py"
        probe.write_text(f"""
import os, sys
fd = os.open("/dev/rd", os.O_RDONLY)          # close-on-exec (Python's default)
print("dev", fd, os.read(fd, 4), flush=True)
os.execv(sys.executable, [sys.executable, "-c",
         "import os; fd = os.open({str(plain)!r}, os.O_RDONLY); "
         "print('after', fd, os.read(fd, 4), os.pread(fd, 4, 4), flush=True)"])
""")
        res = vu(f"""
            vu_insmod vudev
            vumount -t vudevramdisk -o size=64K none /dev/rd; echo "mount=$?"
            printf DEVI > /dev/rd
            /usr/bin/python3 {probe}
            """, env=VIEW_ENV)
        v = dict(ln.split(" ", 1) for ln in res.out.splitlines() if " " in ln)
        assert "mount=0" in res.out, short(res)
        dev_fd = v.get("dev", "").split()[0]
        assert v.get("dev", "").endswith("b'DEVI'"), short(res)
        after = v.get("after", "")
        assert after.endswith("b'PLAN' b'PLAN'"), short(res)
        assert after.split()[0] == dev_fd, short(res)     # the same number
    finally:
        shutil.rmtree(base, ignore_errors=True)
