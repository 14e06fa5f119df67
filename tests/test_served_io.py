"""Descriptor calls on served files moved through tracee memory, in real
umvu sessions: a C program (compiled here) makes large and unaligned reads
and writes (read/write, pread/pwrite, readv/writev, preadv/pwritev; buffers
at odd addresses, across page boundaries, ending right before an
inaccessible page; fusefat's FAT pattern: 16338 bytes read at 2048, changed,
written back) on a vudev loop device and on a memfs file, and checks every
byte read against what it wrote (and the bytes around its buffers). The
device's image is compared with the program's model afterwards.

Then the bug these transfers were first suspected of: fusefat on a vudev
device read back zeros for a file just written (and could leave its image
inconsistent). The transfers were right; the FUSE request was sent twice:
the tracer's quick try of a READ timed out (fusefat needs the tracer for
every read of the device), the call was tried again on a worker, which
asked again, and fusefat answered the second READ from a wrong position.
A quick try's request now stays with the daemon for the retry.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from _vufs_helpers import vu  # noqa: F401  (fixture)
from test_vufuse_support import (
    NOBODY, VIEW_ENV, as_nobody, host, nobody_tmp, short, values)

REPO_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples")
MiB = 1 << 20
SIZE = 2 * MiB + 4096           # bytes of the device (or file) the program uses

SERVED_IO_C = r'''/* served_io PATH SIZE SEED [MODEL_OUT]: large and unaligned reads and writes
 * on bytes [0, SIZE) of PATH, every read checked against a model of what
 * was written. Buffers start at odd addresses, cross page boundaries, end
 * right before an inaccessible page; bytes around a read buffer must stay
 * untouched. The final model goes to MODEL_OUT when given. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096
#define GUARD 64            /* sentinel bytes checked around read buffers */

static unsigned char *model, *arena, *arena_end;
static size_t size;
static int fd;
static unsigned long rnd_state;
static int failures;

static unsigned long rnd(void)
{
    rnd_state = rnd_state * 6364136223846793005UL + 1442695040888963407UL;
    return rnd_state >> 33;
}

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
                       if (++failures > 5) exit(1); } while (0)

/* a buffer of len bytes: unaligned somewhere in the arena, or ending
 * exactly where the arena ends (the next page is PROT_NONE) */
static unsigned char *buffer(size_t len)
{
    size_t room = (size_t)(arena_end - arena) - 2 * GUARD;
    if (rnd() % 4 == 0)
        return arena_end - len;
    return arena + GUARD + rnd() % (room - len + 1);
}

static size_t pick_len(size_t off)
{
    static const size_t sizes[] = {1, 3, 32, 90, 4095, 4096, 4097, 8191,
                                   16338, 16384, 65537, 131072, 200003};
    size_t len = rnd() % 3 ? sizes[rnd() % (sizeof sizes / sizeof *sizes)]
                           : 1 + rnd() % 70000;
    if (len > size - off)
        len = size - off;
    return len;
}

static void fill(unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)rnd();
}

static void check_read(const char *what, unsigned char *buf, size_t off,
                       size_t len, long got)
{
    if (got != (long)len) {
        FAIL("%s at %zu of %zu bytes (buffer %p) returned %ld (%s)", what, off,
             len, (void *)buf, got, got < 0 ? strerror(errno) : "short");
        return;
    }
    if (memcmp(buf, model + off, len)) {
        size_t i = 0;
        while (buf[i] == model[off + i])
            i++;
        FAIL("%s at %zu of %zu bytes (buffer %p): byte %zu differs", what,
             off, len, (void *)buf, i);
    }
    if (buf < arena || buf >= arena_end)
        return;                     /* not an arena buffer: no sentinels */
    for (size_t i = 1; i <= GUARD && buf - i >= arena; i++)
        if (buf[-(long)i] != 0xa5) {
            FAIL("%s at %zu of %zu bytes: byte %zu before the buffer changed",
                 what, off, len, i);
            break;
        }
    for (size_t i = 0; i < GUARD && buf + len + i < arena_end; i++)
        if (buf[len + i] != 0xa5) {
            FAIL("%s at %zu of %zu bytes: byte %zu after the buffer changed",
                 what, off, len, i);
            break;
        }
}

static void check_write(const char *what, size_t off, size_t len, long got)
{
    if (got != (long)len)
        FAIL("%s at %zu of %zu bytes returned %ld (%s)", what, off, len, got,
             got < 0 ? strerror(errno) : "short");
}

/* split [buf, buf + len) into up to 4 iovecs */
static int split(struct iovec *iov, unsigned char *buf, size_t len)
{
    int n = 0;
    size_t done = 0;
    while (done < len && n < 3) {
        size_t piece = 1 + rnd() % (len - done);
        iov[n].iov_base = buf + done;
        iov[n++].iov_len = piece;
        done += piece;
    }
    if (done < len) {
        iov[n].iov_base = buf + done;
        iov[n++].iov_len = len - done;
    }
    return n;
}

static void one_op(void)
{
    size_t off = rnd() % size, len = pick_len(off);
    int op = (int)(rnd() % 8);
    unsigned char *buf = buffer(len);
    struct iovec iov[4];
    long got;

    memset(arena, 0xa5, (size_t)(arena_end - arena));
    if (op & 1) {                                   /* a write */
        fill(buf, len);
        switch (op) {
        case 1: got = pwrite(fd, buf, len, (off_t)off); break;
        case 3: lseek(fd, (off_t)off, SEEK_SET); got = write(fd, buf, len); break;
        case 5: lseek(fd, (off_t)off, SEEK_SET); got = writev(fd, iov, split(iov, buf, len)); break;
        default: got = pwritev(fd, iov, split(iov, buf, len), (off_t)off); break;
        }
        check_write("write", off, len, got);
        if (got > 0)
            memcpy(model + off, buf, (size_t)got);
    } else {                                        /* a read */
        switch (op) {
        case 0: got = pread(fd, buf, len, (off_t)off); break;
        case 2: lseek(fd, (off_t)off, SEEK_SET); got = read(fd, buf, len); break;
        case 4: lseek(fd, (off_t)off, SEEK_SET); got = readv(fd, iov, split(iov, buf, len)); break;
        default: got = preadv(fd, iov, split(iov, buf, len), (off_t)off); break;
        }
        check_read("read", buf, off, len, got);
    }
}

/* what fusefat does with its FAT: read it whole into the heap, change a
 * few entries, write it back over itself */
static void fat_like(void)
{
    size_t at = 2048, len = 16338;
    if (at + len > size)
        return;
    unsigned char *fat = malloc(len);
    if (lseek(fd, (off_t)at, SEEK_SET) != (off_t)at)
        FAIL("lseek: %s", strerror(errno));
    long got = read(fd, fat, len);
    if (got != (long)len || memcmp(fat, model + at, len))
        FAIL("FAT read back wrong (%ld)", got);
    for (int i = 0; i < 8; i++) {
        size_t e = (rnd() % (len / 2)) * 2;
        fat[e] = (unsigned char)rnd();
        fat[e + 1] = 0xff;
    }
    lseek(fd, (off_t)at, SEEK_SET);
    check_write("FAT write", at, len, write(fd, fat, len));
    memcpy(model + at, fat, len);
    memset(fat, 0, len);
    check_read("FAT reread", fat, at, len, pread(fd, fat, len, (off_t)at));
    free(fat);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: served_io PATH SIZE SEED [MODEL_OUT]\n");
        return 2;
    }
    size = strtoul(argv[2], NULL, 0);
    rnd_state = strtoul(argv[3], NULL, 0);
    fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    model = malloc(size);
    /* the arena: 3 pages more than the largest transfer, then a PROT_NONE
     * page, so that a buffer may end right at an inaccessible page */
    size_t arena_len = ((200003 + 3 * PAGE) / PAGE + 1) * PAGE;
    unsigned char *map = mmap(NULL, arena_len + PAGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED || mprotect(map + arena_len, PAGE, PROT_NONE)) {
        perror("mmap");
        return 1;
    }
    arena = map;
    arena_end = map + arena_len;

    /* the whole region in one write, then read back in one read */
    unsigned char *all = malloc(size);
    fill(model, size);
    memcpy(all, model, size);
    check_write("first write", 0, size, pwrite(fd, all, size, 0));
    memset(all, 0, size);
    check_read("first read", all, 0, size, pread(fd, all, size, 0));

    for (int i = 0; i < 400; i++) {
        one_op();
        if (i % 50 == 0)
            fat_like();
    }
    memset(all, 0, size);
    lseek(fd, 0, SEEK_SET);
    size_t done = 0;
    while (done < size) {               /* in odd pieces, as a copy would */
        long got = read(fd, all + done, size - done < 12345 ? size - done : 12345);
        if (got <= 0) {
            FAIL("final read at %zu: %ld", done, got);
            break;
        }
        done += (size_t)got;
    }
    if (done == size && memcmp(all, model, size))
        FAIL("final contents differ from the model");
    if (argc > 4) {
        FILE *out = fopen(argv[4], "wb");
        if (!out || fwrite(model, 1, size, out) != size || fclose(out)) {
            perror(argv[4]);
            return 1;
        }
    }
    if (close(fd))
        FAIL("close: %s", strerror(errno));
    if (failures)
        return 1;
    printf("served_io ok\n");
    return 0;
}
'''


@pytest.fixture(scope="module")
def area():
    """A directory 65534 can use, holding the compiled program."""
    d = nobody_tmp("served-io-")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("gcc is needed: run `make deps`")
    (d / "served_io.c").write_text(SERVED_IO_C)
    subprocess.run([gcc, "-O2", "-Wall", "-o", d / "served_io", d / "served_io.c"],
                   check=True, capture_output=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fresh(area, name: str):
    """A new directory below the area, owned by 65534."""
    d = area / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    return d


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_large_unaligned_io_on_a_vudev_device(vu, area, user):
    d = fresh(area, f"dev-{user}")
    img = d / "disk.img"
    as_nobody(["truncate", "-s", str(SIZE), img])
    res = vu(f"""
        vu_insmod vudev; echo "insmod=$?"
        vumount -t vudevloop {img} /dev/loop7; echo "mount=$?"
        {area}/served_io /dev/loop7 {SIZE} 12345 {d}/model.bin; echo "io=$?"
        vuumount /dev/loop7; echo "umount=$?"
        """, user=user, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("insmod") == "0" and v.get("mount") == "0", short(res)
    assert v.get("io") == "0" and "served_io ok" in res.out, short(res)
    assert v.get("umount") == "0", short(res)
    # what the program wrote reached the image, and nothing else
    assert img.stat().st_size == SIZE
    assert img.read_bytes() == (d / "model.bin").read_bytes()


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_large_unaligned_io_on_a_served_memfs_file(vu, area, user):
    home = vu.home(user)
    mods = home / ".vu" / "modules"
    mods.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(REPO_EXAMPLES, "memfs.py"), mods / "memfs.py")
    if user is not None:
        for p in (home / ".vu", mods, mods / "memfs.py"):
            os.chown(p, NOBODY, NOBODY)
    d = fresh(area, f"mem-{user}")
    res = vu(f"""
        vu_insmod memfs; echo "insmod=$?"
        vumount -t memfs none {d}; echo "mount=$?"
        {area}/served_io {d}/file {SIZE} 777; echo "io=$?"
        echo "size=$(stat -c %s {d}/file)"
        vuumount {d}; echo "umount=$?"
        """, user=user, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("insmod") == "0" and v.get("mount") == "0", short(res)
    assert v.get("io") == "0" and "served_io ok" in res.out, short(res)
    assert v.get("size") == str(SIZE), short(res)
    assert v.get("umount") == "0", short(res)


def test_fusefat_on_a_vudev_device_reads_back_what_it_wrote(vu, area):
    """The report: `echo hey > b; cat b` printed four zero bytes through
    fusefat on a vudev loop device (the same on a plain image worked)."""
    fusefat = shutil.which("fusefat")
    mkfs = shutil.which("mkfs.vfat", path="/usr/sbin:/sbin:/usr/bin")
    fsck = shutil.which("fsck.vfat", path="/usr/sbin:/sbin:/usr/bin")
    if not (fusefat and mkfs and fsck and shutil.which("mtype")):
        pytest.fail("fusefat, dosfstools and mtools are needed: run `make deps`")
    d = fresh(area, "fat")
    img = d / "f.img"
    mnt = d / "m"
    mnt.mkdir()
    os.chown(mnt, NOBODY, NOBODY)
    host(["truncate", "-s", "16M", img], check=True)
    host([mkfs, img], check=True)
    data = b"".join(b"%d\n" % i for i in range(20000))      # 108894 bytes
    (d / "c.src").write_bytes(data)
    res = vu(f"""
        vu_insmod vufuse vudev; echo "insmod=$?"
        vumount -t vudevloop {img} /dev/loop9; echo "loop=$?"
        vumount -t vufusefat -o rw+ /dev/loop9 {mnt}; echo "mount=$?"
        echo hey > {mnt}/b
        echo "b=$(od -An -c {mnt}/b | tr -d ' ')"
        echo "again=$(cat {mnt}/b)"
        cp {d}/c.src {mnt}/c; echo "cp=$?"
        echo "c=$(sha256sum < {mnt}/c | cut -d' ' -f1)"
        echo "head=$(head -c 6 {mnt}/c | od -An -c | tr -d ' ')"
        mkdir {mnt}/dir && echo deep > {mnt}/dir/e; echo "mkdir=$?"
        echo "e=$(cat {mnt}/dir/e)"
        vuumount {mnt}; echo "umount=$?"
        vuumount /dev/loop9
        """, env=VIEW_ENV)
    v = values(res.out)
    assert v.get("insmod") == "0" and v.get("loop") == "0", short(res)
    assert v.get("mount") == "0", short(res)
    assert v.get("b") == r"hey\n", short(res)
    assert v.get("again") == "hey", short(res)
    assert v.get("cp") == "0" and v.get("mkdir") == "0", short(res)
    assert v.get("c") == hashlib.sha256(data).hexdigest(), short(res)
    assert v.get("head") == r"0\n1\n2\n", short(res)
    assert v.get("e") == "deep", short(res)
    assert v.get("umount") == "0", short(res)
    # the image: a clean FAT holding the files
    check = host([fsck, "-n", img])
    assert check.returncode == 0, check.stdout
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    mtype = lambda name: subprocess.run(["mtype", "-i", img, "::" + name], env=env,
                                        capture_output=True, check=True).stdout
    assert mtype("b") == b"hey\n"
    assert mtype("c") == data
    assert mtype("dir/e") == b"deep\n"


# --------------------------------------------------------------------------
# the connection to a daemon: a quick try's request is never sent again

def _session():
    return importlib.import_module("umvu.modules.vufuse.session")


def _protocol():
    return importlib.import_module("umvu.modules.vufuse.protocol")


def test_a_timed_out_quick_request_is_waited_for_not_sent_again():
    session, protocol = _session(), _protocol()
    ours, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn = session.FuseConnection(ours, timeout=5)
    read_in = b"\1" * 40

    def quick(owner, payload=read_in, wait=0.02):
        conn.quick.timeout, conn.quick.owner = wait, owner
        try:
            return conn.request(protocol.FUSE_READ, 5, payload, uid=1, gid=2,
                                pid=3)
        finally:
            conn.quick.timeout = conn.quick.owner = None

    def retry(owner, out, payload=read_in):
        conn.serving.owner = owner
        try:
            out.append(conn.request(protocol.FUSE_READ, 5, payload, uid=1,
                                    gid=2, pid=3))
        except OSError as exc:
            out.append(exc.errno)
        finally:
            conn.serving.owner = None

    def next_request(timeout=1.0):
        daemon.settimeout(timeout)
        try:
            msg = daemon.recv(1 << 16)
        except (socket.timeout, BlockingIOError):
            return None
        ln, op, unique = protocol.IN_HEADER.unpack_from(msg)[:3]
        return op, unique, msg[protocol.IN_HEADER.size:]

    def answer(unique, body):
        daemon.send(protocol.OUT_HEADER.pack(16 + len(body), 0, unique) + body)

    # the quick try times out; its request reached the daemon
    with pytest.raises(OSError) as ei:
        quick(owner=77)
    assert ei.value.errno == errno.ETIMEDOUT
    op, unique, body = next_request()
    assert (op, body) == (protocol.FUSE_READ, read_in)
    # the retry by the same thread waits for that request's reply
    out: list = []
    t = threading.Thread(target=retry, args=(77, out))
    t.start()
    assert next_request(0.2) is None, "the request was sent twice"
    answer(unique, b"hey\n")
    t.join(5)
    assert out == [b"hey\n"]

    # a reply that came before the retry is kept for it too
    with pytest.raises(OSError):
        quick(owner=78)
    op, unique, _ = next_request()
    answer(unique, b"early")
    time.sleep(0.1)
    out = []
    retry(78, out)
    assert out == [b"early"] and next_request(0.1) is None

    # another thread's identical request is its own: sent, answered apart
    with pytest.raises(OSError):
        quick(owner=79)
    _, first, _ = next_request()
    out = []
    t = threading.Thread(target=retry, args=(80, out))
    t.start()
    op, second, body = next_request()
    assert second != first and body == read_in
    answer(second, b"eighty")
    t.join(5)
    assert out == [b"eighty"]
    # a new quick try of thread 79 (its call is over): the parked request
    # is given up, its late reply dropped, and the new one is sent
    payload2 = b"\2" * 40
    th = threading.Thread(target=lambda: out.append(quick(79, payload2, 5.0)))
    th.start()
    op, third, body = next_request()
    assert body == payload2
    answer(first, b"late")
    answer(third, b"new")
    th.join(5)
    assert out[-1] == b"new"
    conn.close()
    daemon.close()
