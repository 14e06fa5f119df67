"""vudev end to end, in real umvu sessions: the ramdisk of seed 004 with
mkfs.ext3 and a vufuse mount of it; two-partition images (FAT + ext4, MBR
and GPT) made unprivileged with sfdisk, mounted with vudevpartx, read with
fdisk and blkid, both partitions mounted with vufuse, files copied in and
out, and the image's bytes outside the partitions unchanged; extended and
logical partitions; loop devices over sparse files with mkfs.vfat,
mkfs.ext4 and e2fsck; the block ioctls, lseek and ENOSPC at a partition's
end; the generic options; bad input.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from test_vufuse_support import (
    NOBODY, VIEW_ENV, as_nobody, host, nobody_tmp, sections, sha256_file, short,
    tool, values)

MiB = 1 << 20
SECTOR = 512
FAT_GUID = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
#: the two partitions (start sector, sectors) of every test image
P1 = (2048, 32768)                  # 16 MiB, FAT
P2 = (34816, 65536)                 # 32 MiB, ext4
IMAGE_SIZE = 64 * MiB


@pytest.fixture
def base():
    d = nobody_tmp("vudev-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sfdisk(img, table: str) -> None:
    as_nobody([tool("sfdisk"), "-q", img], input=table)


def two_partition_image(base, label: str):
    """An image made by uid 65534: sfdisk, then mkfs on files put in place."""
    img = base / f"disk-{label}.img"
    as_nobody(["truncate", "-s", str(IMAGE_SIZE), img])
    if label == "gpt":
        table = (f"label: gpt\nstart={P1[0]}, size={P1[1]}, type={FAT_GUID}\n"
                 f"start={P2[0]}, size={P2[1]}, type={LINUX_GUID}\n")
    else:
        table = (f"label: dos\nstart={P1[0]}, size={P1[1]}, type=c\n"
                 f"start={P2[0]}, size={P2[1]}, type=83\n")
    sfdisk(img, table)
    p1, p2 = base / "p1.fs", base / "p2.fs"
    as_nobody([tool("mkfs.vfat"), "-C", p1, str(P1[1] // 2)])
    as_nobody([tool("mke2fs"), "-q", "-F", "-t", "ext4", "-E",
               f"root_owner={NOBODY}:{NOBODY}", p2, f"{P2[1] // 2048}M"])
    for fs, (start, _) in ((p1, P1), (p2, P2)):
        as_nobody(["dd", f"if={fs}", f"of={img}", "bs=512", f"seek={start}",
                   "conv=notrunc", "status=none"])
        fs.unlink()
    return img


def range_sums(img, ranges) -> list[str]:
    """sha256 of byte ranges of a file."""
    out = []
    with open(img, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            h = hashlib.sha256()
            left = end - start
            while left:
                chunk = f.read(min(left, MiB))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            out.append(h.hexdigest())
    return out


def outside(parts, size) -> list[tuple[int, int]]:
    """The byte ranges of an image no partition covers."""
    ranges, pos = [], 0
    for start, sectors in sorted(parts):
        ranges.append((pos, start * SECTOR))
        pos = (start + sectors) * SECTOR
    ranges.append((pos, size))
    return ranges


def extract(img, part, dest) -> None:
    host(["dd", f"if={img}", f"of={dest}", "bs=512", f"skip={part[0]}",
          f"count={part[1]}", "status=none"], check=True)


# ---------------------------------------------------------------------------
# seed 004: "Create a RAMDISK and mount it"

@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_seed_004_ramdisk(vu, user, base):
    res = vu(f"""
        vu_insmod vufuse vudev; echo "insmod=$?"
        vumount -t vudevramdisk -o size=100M none /dev/ramdisk; echo "mount=$?"
        echo "== mkfs"
        /sbin/mkfs.ext3 /dev/ramdisk; echo "mkfs=$?"
        echo "== -"
        vumount -t vufuseext2 -o rw+ /dev/ramdisk /mnt; echo "fmount=$?"
        echo "== ls"
        ls -l /mnt
        echo "== -"
        grep -c ramdisk /proc/mounts
        vuumount /mnt; echo "fumount=$?"
        vuumount /dev/ramdisk; echo "umount=$?"
        ls /dev/ramdisk; echo "gone=$?"
        """, user=user, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("insmod") == "0" and v.get("mount") == "0", short(res)
    assert v.get("mkfs") == "0", short(res)
    mkfs = "\n".join(sections(res.out)["mkfs"])
    assert "Creating filesystem with 102400 1k blocks" in mkfs, mkfs
    assert "Writing superblocks and filesystem accounting information:" in mkfs, mkfs
    assert v.get("fmount") == "0", short(res)
    listing = sections(res.out)["ls"]
    assert listing[0] == "total 12", short(res)
    fields = listing[1].split()
    assert fields[:5] == ["drwx------", "2", "root", "root", "12288"], listing
    assert fields[-1] == "lost+found" and len(listing) == 2, listing
    assert v.get("fumount") == "0" and v.get("umount") == "0", short(res)
    assert v.get("gone") != "0", short(res)
    assert res.rc == 0, short(res)


# ---------------------------------------------------------------------------
# a partitioned image: fdisk, blkid, both partitions through vufuse

@pytest.mark.parametrize("label,user", [("mbr", None), ("gpt", None), ("mbr", NOBODY)],
                         ids=["mbr-root", "gpt-root", "mbr-nobody"])
def test_partx_two_partitions(vu, base, label, user):
    img = two_partition_image(base, label)
    untouched = outside([P1, P2], IMAGE_SIZE)
    before = range_sums(img, untouched)
    rnd = random.Random(10)
    src = base / "src"
    src.mkdir()
    files = {"hello.txt": b"hello vudev\n", "blob.bin": rnd.randbytes(300000),
             "big.bin": rnd.randbytes(3 * MiB + 17)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    for d in (src, *src.iterdir()):
        os.chown(d, NOBODY, NOBODY)
    for d in ("m1", "m2", "out1", "out1f", "out2"):
        (base / d).mkdir()
        os.chown(base / d, NOBODY, NOBODY)
    res = vu(f"""
        T={base}
        vu_insmod vufuse vudev; echo "insmod=$?"
        vumount -t vudevpartx $T/{img.name} /dev/sdx; echo "mount=$?"
        echo "== mounts"; grep /dev/sdx /proc/mounts; echo "== -"
        echo "== devs"; ls -l /dev/sdx /dev/sdx1 /dev/sdx2; echo "== -"
        ls /dev/sdx3; echo "sdx3=$?"
        echo "== fdisk"; fdisk -l /dev/sdx; echo "== -"
        echo "== blkid"; blkid /dev/sdx2; blkid /dev/sdx1; echo "== -"
        echo "size1=$(blockdev --getsize64 /dev/sdx1)"
        echo "size2=$(blockdev --getsize64 /dev/sdx2)"
        vumount -t vufusefat -o rw+ /dev/sdx1 $T/m1; echo "m1=$?"
        vumount -t vufuseext4 -o rw+ /dev/sdx2 $T/m2; echo "m2=$?"
        cp $T/src/* $T/m1/ && cp $T/src/* $T/m2/; echo "cpin=$?"
        vuumount $T/m1; echo "u1=$?"
        vuumount $T/m2; echo "u2=$?"
        vumount -t vufuseext4 /dev/sdx2 $T/m2; echo "again=$?"
        echo "== sums"; (cd $T/m2 && sha256sum *.bin *.txt); echo "== -"
        cp $T/m2/*.bin $T/m2/*.txt $T/out2/; echo "cpout=$?"
        vuumount $T/m2
        # the FAT side is read back with mtools through /dev/sdx1 itself,
        # and through vufusefat
        for f in {" ".join(files)}; do MTOOLS_SKIP_CHECK=1 mcopy -n -i /dev/sdx1 ::$f $T/out1/ || echo "mcopy=$f"; done
        vumount -t vufusefat /dev/sdx1 $T/m1; echo "again1=$?"
        cp $T/m1/* $T/out1f/; echo "cpout1=$?"
        vuumount $T/m1
        vuumount /dev/sdx; echo "umount=$?"
        ls /dev/sdx1; echo "gone=$?"
        """, user=user, env=VIEW_ENV)
    v = values(res.out)
    secs = sections(res.out)
    assert v.get("insmod") == "0" and v.get("mount") == "0", short(res)
    # only the disk is a mount; its partitions are not
    assert [m.split()[:3] for m in secs["mounts"]] == \
        [[str(img), "/dev/sdx", "vudevpartx"]], short(res)
    devs = [line.split() for line in secs["devs"]]
    assert [d[0][0] for d in devs] == ["b", "b", "b"], devs
    assert [d[-1] for d in devs] == ["/dev/sdx", "/dev/sdx1", "/dev/sdx2"], devs
    assert v.get("sdx3") != "0", short(res)
    fdisk = "\n".join(secs["fdisk"])
    assert f"Disk /dev/sdx: 64 MiB, {IMAGE_SIZE} bytes, {IMAGE_SIZE // SECTOR} sectors" \
        in fdisk, fdisk
    assert ("Disklabel type: gpt" if label == "gpt" else "Disklabel type: dos") in fdisk
    rows = {line.split()[0]: line.split()[1:4] for line in secs["fdisk"]
            if line.startswith("/dev/sdx")}
    assert rows == {"/dev/sdx1": [str(P1[0]), str(sum(P1) - 1), str(P1[1])],
                    "/dev/sdx2": [str(P2[0]), str(sum(P2) - 1), str(P2[1])]}, fdisk
    blkid = secs["blkid"]
    assert blkid[0].startswith("/dev/sdx2: UUID=") and 'TYPE="ext4"' in blkid[0], blkid
    assert 'TYPE="vfat"' in blkid[1], blkid
    assert v.get("size1") == str(P1[1] * SECTOR) and v.get("size2") == str(P2[1] * SECTOR)
    assert v.get("m1") == "0" and v.get("m2") == "0", short(res)
    assert v.get("cpin") == "0", short(res)
    want = {hashlib.sha256(data).hexdigest() + "  " + name for name, data in files.items()}
    assert set(secs["sums"]) == want, short(res)
    assert "mcopy" not in v, short(res)
    assert v.get("u1") == "0" and v.get("u2") == "0" and v.get("again") == "0", short(res)
    assert v.get("cpout") == "0" and v.get("umount") == "0", short(res)
    assert v.get("again1") == "0" and v.get("cpout1") == "0", short(res)
    assert v.get("gone") != "0", short(res)
    for out in ("out1", "out1f", "out2"):
        for name, data in files.items():
            assert sha256_file(base / out / name) == hashlib.sha256(data).hexdigest()
    # nothing outside the partitions changed, and both file systems are clean
    assert range_sums(img, untouched) == before
    extract(img, P2, base / "p2.check")
    fsck = host([tool("e2fsck"), "-fn", base / "p2.check"])
    assert fsck.returncode == 0, fsck.stdout
    extract(img, P1, base / "p1.check")
    fsck = host([tool("fsck.vfat"), "-n", base / "p1.check"])
    assert fsck.returncode == 0, fsck.stdout


def test_partx_extended_logical_and_enospc(vu, base):
    """MBR: p1 primary, p2 extended holding p5 and p6. Filling p5 with dd
    ends in ENOSPC and touches nothing else of the image."""
    img = base / "ext.img"
    as_nobody(["truncate", "-s", str(16 * MiB), img])
    sfdisk(img, "label: dos\nstart=2048, size=4096, type=83\n"
                "start=8192, size=20480, type=5\n"
                "start=10240, size=4096, type=83\nstart=16384, size=8192, type=83\n")
    dump = host([tool("sfdisk"), "-d", img], check=True).stdout.decode()
    p5 = p6 = None
    for line in dump.splitlines():
        if line.startswith(f"{img}5"):
            p5 = tuple(int(x.split("=")[1]) for x in line.split(":")[1].split(",")[:2])
        if line.startswith(f"{img}6"):
            p6 = tuple(int(x.split("=")[1]) for x in line.split(":")[1].split(",")[:2])
    assert p5 and p6, dump
    os.chmod(img, 0o666)
    untouched = outside([p5], 16 * MiB)
    before = range_sums(img, untouched)
    res = vu(f"""
        vu_insmod vudev
        vumount -t vudevpartx {img} /dev/sdx; echo "mount=$?"
        echo "== ls"; ls /dev/sdx /dev/sdx1 /dev/sdx2 /dev/sdx5 /dev/sdx6; ls /dev/sdx3 /dev/sdx7; echo "== -"
        echo "size2=$(blockdev --getsize64 /dev/sdx2)"
        echo "size5=$(blockdev --getsize64 /dev/sdx5)"
        echo "size6=$(blockdev --getsize64 /dev/sdx6)"
        echo "== sfdisk"; sfdisk -d /dev/sdx | grep '^/dev'; echo "== -"
        echo "== partx"; partx --show /dev/sdx; echo "== -"
        echo "== dd"
        LC_ALL=C dd if=/dev/urandom of=/dev/sdx5 bs=1M 2>&1; echo "dd=$?"
        echo "== -"
        echo "tail=$(dd if=/dev/sdx5 bs=512 skip={p5[1] - 1} 2>/dev/null | wc -c)"
        """, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("mount") == "0", short(res)
    assert secs["ls"] == ["/dev/sdx", "/dev/sdx1", "/dev/sdx2", "/dev/sdx5",
                          "/dev/sdx6"], short(res)
    assert v.get("size2") == "1024", short(res)       # as Linux shows it
    assert v.get("size5") == str(p5[1] * SECTOR) and v.get("size6") == str(p6[1] * SECTOR)
    starts = [line.split("start=")[1].split(",")[0].strip() for line in secs["sfdisk"]]
    assert starts == ["2048", "8192", str(p5[0]), str(p6[0])], secs["sfdisk"]
    assert len(secs["partx"]) == 5, secs["partx"]     # header + 4
    dd = "\n".join(secs["dd"])
    assert "No space left on device" in dd and v.get("dd") != "0", dd
    assert f"{p5[1] * SECTOR} bytes" in dd, dd
    assert v.get("tail") == "512", short(res)
    assert range_sums(img, untouched) == before


# ---------------------------------------------------------------------------
# loop devices over sparse files

def test_loop_mkfs_fsck(vu, base):
    for name in ("fat.img", "ext.img"):
        as_nobody(["truncate", "-s", "48M", base / name])
    res = vu(f"""
        T={base}
        vu_insmod vudev
        vumount -t vudevloop $T/fat.img /dev/loop0; echo "l0=$?"
        vumount -t vudevloop $T/ext.img /dev/loop1; echo "l1=$?"
        echo "size=$(blockdev --getsize64 /dev/loop1)"
        mkfs.vfat /dev/loop0 >/dev/null; echo "vfat=$?"
        fsck.vfat -n /dev/loop0 >/dev/null; echo "fsckvfat=$?"
        mkfs.ext4 -q /dev/loop1; echo "ext4=$?"
        e2fsck -fn /dev/loop1; echo "e2fsck=$?"
        blkid -o value -s TYPE /dev/loop0 /dev/loop1
        """, user=NOBODY, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("l0") == "0" and v.get("l1") == "0", short(res)
    assert v.get("size") == str(48 * MiB), short(res)
    assert v.get("vfat") == "0" and v.get("fsckvfat") == "0", short(res)
    assert v.get("ext4") == "0" and v.get("e2fsck") == "0", short(res)
    assert res.out.splitlines()[-2:] == ["vfat", "ext4"], short(res)
    for name in ("fat.img", "ext.img"):
        st = os.stat(base / name)
        assert st.st_size == 48 * MiB
        assert st.st_blocks * 512 < st.st_size // 2, f"{name} is no longer sparse"
    fsck = host([tool("e2fsck"), "-fn", base / "ext.img"])
    assert fsck.returncode == 0, fsck.stdout
    fsck = host([tool("fsck.vfat"), "-n", base / "fat.img"])
    assert fsck.returncode == 0, fsck.stdout


# ---------------------------------------------------------------------------
# device semantics: ioctls, lseek, pread/pwrite/readv/writev, ENOSPC, options

IOCTL_PROBE = r'''
import errno, fcntl, os, stat, struct, sys
path = sys.argv[1]
st = os.stat(path)
print("isblk=%d" % stat.S_ISBLK(st.st_mode))
print("rdev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
fd = os.open(path, os.O_RDWR)
def ioc(req, fmt, arg=None):
    buf = bytearray(struct.calcsize(fmt)) if arg is None else bytearray(struct.pack(fmt, *arg))
    fcntl.ioctl(fd, req, buf)
    return struct.unpack(fmt, buf)
print("size64=%d" % ioc(0x80081272, "Q"))
print("sectors=%d" % ioc(0x1260, "Q"))
print("ssz=%d" % ioc(0x1268, "i"))
print("pbsz=%d" % ioc(0x127b, "I"))
print("ro=%d" % ioc(0x125e, "i"))
print("geo=%d,%d,%d,%d" % ioc(0x0301, "BBHxxxxQ"))
print("seekend=%d" % os.lseek(fd, 0, os.SEEK_END))
os.pwrite(fd, b"x" * 4096, 8192)
print("pread=%s" % os.pread(fd, 3, 8192).decode())
ioc(0x127f, "QQ", (8192, 4096))                     # BLKZEROOUT
print("zeroed=%d" % (os.pread(fd, 4096, 8192) == bytes(4096)))
os.pwrite(fd, b"y" * 512, 0)
ioc(0x1277, "QQ", (0, 512))                         # BLKDISCARD
print("discarded=%d" % (os.pread(fd, 512, 0) == bytes(512)))
fcntl.ioctl(fd, 0x1261)                             # BLKFLSBUF
os.lseek(fd, 100, os.SEEK_SET)
print("writev=%d" % os.writev(fd, [b"ab", b"cd"]))
os.lseek(fd, 100, os.SEEK_SET)
a, b = bytearray(1), bytearray(3)
print("readv=%d:%s" % (os.readv(fd, [a, b]), (a + b).decode()))
size = os.lseek(fd, 0, os.SEEK_END)
print("short=%d" % os.pwrite(fd, b"z" * 1024, size - 512))
for name, call in (("past", lambda: os.pwrite(fd, b"z", size)),
                   ("unknown", lambda: fcntl.ioctl(fd, 0x5401, bytes(64))),
                   ("zerobad", lambda: ioc(0x127f, "QQ", (1, 512))),
                   ("rrpart", lambda: fcntl.ioctl(fd, 0x125f))):
    try:
        call()
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + errno.errorcode[e.errno])
ioc(0x125d, "i", (1,))                              # BLKROSET
print("ro2=%d" % ioc(0x125e, "i"))
try:
    os.pwrite(fd, b"q", 0)
except OSError as e:
    print("rowrite=" + errno.errorcode[e.errno])
ioc(0x125d, "i", (0,))
print("rw=%d" % os.pwrite(fd, b"q", 0))
'''


def test_ioctls_and_io(vu, base):
    probe = base / "probe.py"
    probe.write_text(IOCTL_PROBE)
    res = vu(f"""
        vu_insmod vudev
        vumount -t vudevramdisk -o size=2048,major=250,minor=7 none /dev/rd; echo "mount=$?"
        /usr/bin/python3 {probe} /dev/rd
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("mount") == "0", short(res)
    size = 2048 * SECTOR
    assert v.get("isblk") == "1" and v.get("rdev") == "250:7", short(res)
    assert v.get("size64") == str(size) and v.get("sectors") == "2048", short(res)
    assert v.get("ssz") == "512" and v.get("pbsz") == "512" and v.get("ro") == "0"
    assert v.get("geo") == "255,63,0,0", short(res)
    assert v.get("seekend") == str(size), short(res)
    assert v.get("pread") == "xxx" and v.get("zeroed") == "1", short(res)
    assert v.get("discarded") == "1", short(res)
    assert v.get("writev") == "4" and v.get("readv") == "4:abcd", short(res)
    assert v.get("short") == "512" and v.get("past") == "ENOSPC", short(res)
    assert v.get("unknown") == "ENOTTY" and v.get("zerobad") == "EINVAL", short(res)
    assert v.get("rrpart") == "EINVAL", short(res)     # a ramdisk without mbr
    assert v.get("ro2") == "1" and v.get("rowrite") == "EPERM", short(res)
    assert v.get("rw") == "1", short(res)


def test_options_null_and_ramdisk_partitions(vu, base):
    res = vu(f"""
        vu_insmod vudev
        vumount -t vudevramdisk -o size=1K none /dev/tiny; echo "tiny=$(blockdev --getsize64 /dev/tiny)"
        vumount -t vudevramdisk -o size=4M,mode=0640,uid=123,gid=45,chrdev none /dev/c
        echo "== c"; stat -c '%F %a %u %g' /dev/c; echo "== -"
        vumount -t vudevnull none /dev/mynull; echo "null=$?"
        echo "== null"; stat -c '%F' /dev/mynull; echo hi > /dev/mynull; echo "w=$?"
        cat /dev/mynull | wc -c; echo "== -"
        vumount -t vudevramdisk -o size=8M,mbr none /dev/rdisk; echo "mbr=$?"
        ls /dev/rdisk1; echo "before=$?"
        echo 'start=2048, size=4096, type=83' | sfdisk -q /dev/rdisk; echo "sfdisk=$?"
        echo "p1=$(blockdev --getsize64 /dev/rdisk1)"
        vumount -t vudevramdisk -o ro none /dev/rordisk
        echo x > /dev/rordisk; echo "rowrite=$?"
        echo "rordisk=$(blockdev --getro /dev/rordisk)"
        """, env=VIEW_ENV)
    v, secs = values(res.out), sections(res.out)
    assert v.get("tiny") == "1024", short(res)
    assert secs["c"] == ["character special file 640 123 45"], short(res)
    assert v.get("null") == "0" and secs["null"][0] == "character special file"
    assert v.get("w") == "0" and secs["null"][-1] == "0", short(res)
    assert v.get("mbr") == "0" and v.get("before") != "0", short(res)
    assert v.get("sfdisk") == "0" and v.get("p1") == str(4096 * SECTOR), short(res)
    assert v.get("rowrite") != "0" and v.get("rordisk") == "1", short(res)
    assert "Read-only file system" in res.err, short(res)


# ---------------------------------------------------------------------------
# bad input: a clear error, an errno, and the view goes on

def test_bad_input(vu, base):
    tiny = base / "tiny.img"
    tiny.write_bytes(b"\0" * 300)
    nosig = base / "nosig.img"
    nosig.write_bytes(b"\0" * 4096)
    past = base / "past.img"
    as_nobody(["truncate", "-s", "8M", past])
    sfdisk(past, "label: dos\nstart=2048, size=12288, type=83\n")
    os.truncate(past, 4 * MiB)
    gpt = base / "gpt.img"
    as_nobody(["truncate", "-s", "8M", gpt])
    sfdisk(gpt, f"label: gpt\nstart=2048, size=4096, type={LINUX_GUID}\n")
    with open(gpt, "r+b") as f:                 # break both headers' CRC
        for lba in (1, 8 * MiB // SECTOR - 1):
            f.seek(lba * SECTOR + 16)
            f.write(b"\xde\xad\xbe\xef")
    # a bad EBR chain: an extended partition whose EBR has no signature
    ebr = base / "ebr.img"
    as_nobody(["truncate", "-s", "8M", ebr])
    sfdisk(ebr, "label: dos\nstart=2048, size=8192, type=5\nstart=4096, size=2048, type=83\n")
    with open(ebr, "r+b") as f:
        f.seek(2048 * SECTOR + 510)
        f.write(b"\0\0")
    res = vu(f"""
        T={base}
        vu_insmod vudev
        vumount -t vudevramdisk -o size=banana none /dev/r1; echo "banana=$?"
        vumount -t vudevramdisk -o size=12K,colour=blue none /dev/r1; echo "unknown=$?"
        vumount -t vudevpartx $T/missing.img /dev/sdx; echo "missing=$?"
        vumount -t vudevpartx $T/tiny.img /dev/sdx; echo "tiny=$?"
        vumount -t vudevpartx $T/nosig.img /dev/sdx; echo "nosig=$?"
        vumount -t vudevpartx $T/past.img /dev/sdx; echo "past=$?"
        vumount -t vudevpartx $T/gpt.img /dev/sdx; echo "gpt=$?"
        vumount -t vudevpartx $T/ebr.img /dev/sdx; echo "ebr=$?"
        vumount -t vudevloop $T/missing.img /dev/loop0; echo "loop=$?"
        vumount -t vudevbogus none /dev/b; echo "bogus=$?"
        ls /dev/sdx /dev/r1 2>/dev/null; echo "none=$?"
        vumount -t vudevramdisk -o size=12K none /dev/r1; echo "good=$?"
        echo "alive=$(blockdev --getsize64 /dev/r1)"
        """, env=VIEW_ENV)
    v = values(res.out)
    for key in ("banana", "unknown", "missing", "tiny", "nosig", "past", "gpt",
                "ebr", "loop", "bogus"):
        assert v.get(key) == "1", f"{key}: {short(res)}"
    assert v.get("none") != "0" and v.get("good") == "0", short(res)
    assert v.get("alive") == str(12 * 1024), short(res)
    err = res.err
    for text in ("vudevramdisk: size=banana: not a size",
                 "vudevramdisk: unknown option colour",
                 f"vudevpartx: {base}/missing.img: No such file or directory",
                 f"vudevpartx: {base}/tiny.img: truncated partition table",
                 "no partition table",
                 "partition 1 runs past the end of the image",
                 "bad CRC",
                 "bad extended boot record",
                 f"vudevloop: {base}/missing.img: No such file or directory",
                 "vudevbogus: unknown device type",
                 "vumount: /dev/sdx: Invalid argument",
                 "vumount: /dev/sdx: No such file or directory"):
        assert text in err, f"{text!r} not in stderr: {err}"
    assert res.rc == 0, short(res)
