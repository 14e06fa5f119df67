"""Regression tests of the hardening issue (issues show 16): the holes a view
must close, bad input that must give a clear error, and faults that must
neither hang nor leave anything behind.

Every test runs a real umvu (conftest's `run_umvu`), nearly all of them as
the unprivileged uid 65534: the attacks are those an ordinary user's
program can make. The attacking programs are small C programs compiled here
with gcc (a session fixture) and Python ctypes scripts written next to them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import NOBODY, REPO, nobody_dir
from test_unprivileged import manifest
from test_vufuse_support import SBIN_PATH, VIEW_PATH

pytestmark = pytest.mark.usefixtures("unprivileged")

TIMEOUT = 60

#: why test_helper_child_exposes_no_descriptor fails
HELPER_CHILD_DUMPABLE = (
    "csrc/spawn.c: the child umvu forks for a helper sets PR_SET_DUMPABLE 1 "
    "right after fork, while it still holds every descriptor of the "
    "hypervisor (CLOEXEC ones close only at exec): a process of the view "
    "takes them with pidfd_getfd in that window, the view's seccomp "
    "notification listener included")

# ---------------------------------------------------------------------------
# the attacking programs

ATTACK_C = r"""
/* attack PID [TID...]: every way a process of the same user reaches into
   another one; one line per attempt, the errno's name or OK */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *res(long r) { return r < 0 ? strerrorname_np(errno) : "OK"; }

int main(int argc, char **argv) {
    pid_t pid = atoi(argv[1]);
    char path[64], buf[8] = "umvu!!!";
    for (int i = 1; i < argc; i++) {           /* the process, then its threads */
        long r = ptrace(PTRACE_SEIZE, atoi(argv[i]), 0, 0);
        printf("seize %s\n", res(r));
    }
    printf("attach %s\n", res(ptrace(PTRACE_ATTACH, pid, 0, 0)));
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int fd = open(path, O_WRONLY);
    printf("mem %s\n", res(fd));
    if (fd >= 0) close(fd);
    /* remote address 8: EFAULT if allowed, so nothing is ever written */
    struct iovec local = {buf, sizeof buf}, remote = {(void *)8, sizeof buf};
    printf("vm_writev %s\n", res(syscall(SYS_process_vm_writev, pid, &local, 1, &remote, 1, 0)));
    int pidfd = syscall(SYS_pidfd_open, pid, 0);
    printf("pidfd_open %s\n", res(pidfd));
    for (int n = 0; n <= 20; n++) {
        long got = syscall(SYS_pidfd_getfd, pidfd, n, 0);
        printf("getfd %d %s\n", n, res(got));
        if (got >= 0) close(got);
    }
    return 0;
}
"""

RETRACE_C = r"""
/* retrace FILE TEXT: a filter of our own says SECCOMP_RET_TRACE|2 ("other
   ABI") for openat, then FILE is opened for writing and TEXT written */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | 2),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        return 2;
    }
    int fd = open(argv[1], O_WRONLY | O_TRUNC);
    if (fd < 0) {
        printf("open %s\n", strerror(errno));
        return 1;
    }
    printf("write %zd\n", write(fd, argv[2], strlen(argv[2])));
    return 0;
}
"""

INT80_C = r"""
/* int80 PATH: open(PATH, O_RDONLY) by the 32-bit entry (int $0x80, eax=5);
   prints what it returned. Static, non-PIE: the path is below 4 GiB. */
#include <stdio.h>
#include <string.h>
static char path[4096];
int main(int argc, char **argv) {
    long ret;
    strncpy(path, argv[1], sizeof path - 1);
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(5), "b"(path), "c"(0), "d"(0) : "memory");
    printf("%ld\n", ret);
    return 0;
}
"""

BIND80_C = r"""
/* bind80 PATH: AF_UNIX sockets bound to PATH by the 32-bit entry, once by
   bind (i386 361) and once by socketcall(SYS_BIND) (i386 102, PATH + "2") */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
static struct sockaddr_un addr;
static unsigned int args[3];
int main(int argc, char **argv) {
    long ret;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 2);
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(361), "b"(fd), "c"(&addr), "d"(sizeof addr) : "memory");
    printf("bind=%ld\n", ret);
    strcat(addr.sun_path, "2");
    args[0] = socket(AF_UNIX, SOCK_STREAM, 0);
    args[1] = (unsigned int)(unsigned long)&addr;
    args[2] = sizeof addr;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(102), "b"(2), "c"(args) : "memory");
    printf("socketcall=%ld\n", ret);
    return 0;
}
"""

GRAB_C = r"""
/* grab UMVU_PID SECONDS: spin on the pids about to be used; from each child
   of umvu, take descriptors 3..63 with pidfd_getfd and print what they
   are. Ends early once it holds one of the hypervisor's own (a seccomp
   listener, its signalfd or eventfd). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int ppid_of(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *r = strrchr(buf, ')');
    int ppid;
    return r && sscanf(r + 2, "%*c %d", &ppid) == 1 ? ppid : -1;
}

int main(int argc, char **argv) {
    int umvu = atoi(argv[1]);
    time_t end = time(NULL) + atoi(argv[2]);
    while (time(NULL) < end) {
        char num[32] = {0};
        int fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY);
        if (fd < 0 || read(fd, num, sizeof num - 1) <= 0) return 2;
        close(fd);
        int last = atoi(num), own = 0;
        for (int pid = last - 2; pid <= last + 3; pid++) {
            int pidfd = syscall(SYS_pidfd_open, pid, 0);
            if (pidfd < 0) continue;
            if (ppid_of(pid) == umvu) {
                for (int n = 3; n < 64; n++) {
                    int got = syscall(SYS_pidfd_getfd, pidfd, n, 0);
                    if (got < 0) continue;
                    char link[64], target[256] = {0};
                    snprintf(link, sizeof link, "/proc/self/fd/%d", got);
                    readlink(link, target, sizeof target - 1);
                    printf("grabbed %d %d %s\n", pid, n, target);
                    own |= strstr(target, "seccomp") || strstr(target, "signalfd")
                           || strstr(target, "eventfd");
                    close(got);
                }
            }
            close(pidfd);
        }
        if (own) break;
    }
    fflush(stdout);
    return 0;
}
"""

#: escape.py: each way around the mounts, tried in a child of its own (a
#: namespace that works must not change the next attempt); `NAME RESULT`
ESCAPE_PY = r"""
import ctypes, errno, os, struct, sys, threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD, SIGCHLD = -100, 17
CLONE_NEWNS, CLONE_NEWUSER = 0x20000, 0x10000000


def sc(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return r, ctypes.get_errno()


def unshare_user():
    return libc.unshare(CLONE_NEWUSER), ctypes.get_errno()


def unshare_user_mnt():
    return libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), ctypes.get_errno()


def setns_user():
    # natively EINVAL (it is already our user namespace); guarded: EPERM
    fd = os.open("/proc/self/ns/user", os.O_RDONLY)
    return libc.setns(fd, CLONE_NEWUSER), ctypes.get_errno()


def forked(r):
    if r[0] == 0:
        os._exit(0)              # the child of a raw clone
    if r[0] > 0:
        os.waitpid(r[0], 0)
    return r


def clone_user():
    return forked(sc(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0))


def clone3_user():
    args = ctypes.create_string_buffer(struct.pack("8Q", CLONE_NEWUSER, 0, 0, 0,
                                                   SIGCHLD, 0, 0, 0), 64)
    return forked(sc(435, args, 64))


def io_uring_setup():
    return sc(425, 4, ctypes.create_string_buffer(120))


def open_tree():
    return sc(428, AT_FDCWD, ctypes.c_char_p(b"/"), 0)


def fsopen():
    return sc(430, ctypes.c_char_p(b"tmpfs"), 0)


def threads():
    out = []
    ts = [threading.Thread(target=lambda i=i: out.append(sum(range(i * 1000))))
          for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return (0 if len(out) == 8 else -1), 0


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return (0 if os.waitpid(pid, 0)[1] == 7 << 8 else -1), 0


for fn in (unshare_user, unshare_user_mnt, setns_user, clone_user, clone3_user,
           io_uring_setup, open_tree, fsopen, threads, fork):
    name = fn.__name__
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        r, e = fn()
        os.write(wr, ("OK" if r >= 0 else errno.errorcode.get(e, str(e))).encode())
        os._exit(0)
    os.close(wr)
    os.waitpid(pid, 0)
    print(sys.argv[1], name, os.read(rd, 100).decode() or "died", flush=True)
"""

#: ring.py READY GO: an io_uring ring made now, used once at once and once
#: more after a line arrives on the fifo GO
RING_PY = r"""
import ctypes, errno, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def sc(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return "OK" if r >= 0 else errno.errorcode[ctypes.get_errno()]


def use(when):
    print(when, "enter", sc(426, fd, 0, 0, 0, None, 0))
    probe = ctypes.create_string_buffer(16 + 8 * 256)
    print(when, "register", sc(427, fd, 8, probe, 256), flush=True)   # PROBE


fd = libc.syscall(ctypes.c_long(425), ctypes.c_long(4), ctypes.create_string_buffer(120))
print("setup", "OK" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
use("before")
open(sys.argv[1], "w").close()
with open(sys.argv[2]) as go:
    go.readline()
use("after")
"""

#: mount.py SRC TARGET: mount(2) by hand, with a NULL target and bad flags
MOUNT_PY = r"""
import ctypes, errno, sys

libc = ctypes.CDLL(None, use_errno=True)


def mount(src, tgt, flags):
    r = libc.mount(src, tgt, b"vufs", ctypes.c_ulong(flags), None)
    return "OK" if r == 0 else errno.errorcode[ctypes.get_errno()]


src, tgt = (a.encode() for a in sys.argv[1:3])
print("null-target", mount(src, None, 0))
print("flags=-1", mount(src, tgt, (1 << 64) - 1))
print("good", mount(src, tgt, 0))
"""


@pytest.fixture(scope="module")
def bins():
    """The attacking programs, compiled, in a directory 65534 can read."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the attacking programs")
    d = Path(tempfile.mkdtemp(prefix="umvu-hardening-bin-", dir="/tmp"))
    d.chmod(0o755)
    for name, src, extra in (("attack", ATTACK_C, []), ("retrace", RETRACE_C, []),
                             ("grab", GRAB_C, []),
                             ("int80", INT80_C, ["-static", "-no-pie"]),
                             ("bind80", BIND80_C, ["-static", "-no-pie"])):
        (d / f"{name}.c").write_text(src)
        subprocess.run(["gcc", "-O1", "-o", str(d / name), str(d / f"{name}.c"), *extra],
                       check=True, capture_output=True, text=True)
    for name, src in (("escape.py", ESCAPE_PY), ("ring.py", RING_PY),
                      ("mount.py", MOUNT_PY)):
        (d / name).write_text(src)
    for p in d.iterdir():
        p.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def area():
    """A scratch directory owned by 65534."""
    d = nobody_dir("umvu-hardening-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mkdirs(base: Path, *names: str, owner: int = NOBODY) -> list[Path]:
    out = []
    for name in names:
        p = base / name
        p.mkdir(parents=True, exist_ok=True)
        os.chown(p, owner, owner)
        out.append(p)
    return out


def put(path: Path, text: str, owner: int = NOBODY, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def vu(run_umvu, script: str, user=NOBODY, env: dict | None = None, **kw):
    return run_umvu(textwrap.dedent(script), user=user, timeout=kw.pop("timeout", TIMEOUT),
                    extra_env=env, **kw)


def show(res) -> str:
    return f"rc={res.returncode}\n--- stdout ---\n{res.stdout}--- stderr ---\n{res.stderr}"


def values(out: str) -> dict:
    """`key=value` lines of a session's output."""
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def install_user_module(run_umvu, name: str, text: str, user=NOBODY) -> None:
    home = run_umvu.home(user)
    mods = home / ".vu" / "modules"
    mods.mkdir(parents=True, exist_ok=True)
    (mods / f"{name}.py").write_text(textwrap.dedent(text))
    if user is not None:
        for p in (home / ".vu", mods, mods / f"{name}.py"):
            os.chown(p, NOBODY, NOBODY)


# ---------------------------------------------------------------------------
# 1. the hypervisor is out of its tracees' reach


def test_hypervisor_not_reachable(run_umvu, bins, area):
    src, mnt = mkdirs(area, "src", "mnt")
    put(src / "hello", "hello from vufs\n")
    res = vu(run_umvu, f"""
        B={bins}
        echo "owner=$(stat -c %u /proc/$UMVU_PID/mem)"
        $B/attack $UMVU_PID | sed 's/^/untraced /'
        vu_insmod vufs || exit 90
        vumount -t vufs {src} {mnt} || exit 91
        $B/attack $UMVU_PID $(ls /proc/$UMVU_PID/task) | sed 's/^/traced /'
        vumount -t vufs {src} {area}/again || exit 92
        echo "cat=$(cat {mnt}/hello {area}/again/hello | tr '\\n' ' ')"
    """)
    assert res.returncode == 0, show(res)
    assert values(res.stdout)["cat"] == "hello from vufs hello from vufs ", show(res)
    # non-dumpable: its /proc files belong to root
    assert values(res.stdout)["owner"] == "0", show(res)
    results = [line.split() for line in res.stdout.splitlines()
               if line.startswith(("untraced ", "traced "))]
    assert len(results) > 2 * 25, show(res)
    for when, what, *rest in results:
        err = rest[-1]
        if what == "pidfd_open":
            assert err == "OK", show(res)       # needs no permission
        elif what == "mem":
            # mm_access says EACCES (the file's mode, root 0600, says it first)
            assert err in ("EPERM", "EACCES"), (when, what, show(res))
        else:
            assert err == "EPERM", (when, what, rest, show(res))


def test_rc_file_loading_a_module_unprivileged(run_umvu):
    """The view's command is spawned traced after an rc file loaded a module."""
    rc = run_umvu.home(NOBODY) / "rc"
    put(rc, "vu_insmod vufs\n")
    res = run_umvu(["echo", "command ran"], user=NOBODY, opts=("-f", str(rc)),
                   timeout=TIMEOUT)
    assert (res.returncode, res.stdout) == (0, "command ran\n"), show(res)


def test_fuse_daemon_spawns_unprivileged(run_umvu, area):
    """vumount of an image starts its FUSE program as a helper of the view."""
    tree, mnt = mkdirs(area, "tree", "mnt")
    put(tree / "inside", "in the image\n")
    mke2fs = shutil.which("mke2fs", path=SBIN_PATH)
    if mke2fs is None:
        pytest.fail("mke2fs (e2fsprogs) is needed")
    img = area / "ext2.img"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-d", str(tree), str(img), "4M"],
                   check=True, capture_output=True)
    os.chown(img, NOBODY, NOBODY)
    res = vu(run_umvu, f"""
        vu_insmod vufuse || exit 90
        vumount -t vufuseext2 {img} {mnt}; echo "mount=$?"
        echo "cat=$(cat {mnt}/inside)"
        vuumount {mnt}
    """, env={"PATH": VIEW_PATH})
    v = values(res.stdout)
    assert (v["mount"], v["cat"]) == ("0", "in the image"), show(res)
    assert res.returncode == 0, show(res)


def test_helper_child_exposes_no_descriptor(run_umvu, bins, area):
    """Between its fork and its exec, a helper's child is a copy of the
    hypervisor: it must be as far out of reach (or hold nothing)."""
    mkdirs(area, "mnt")
    res = vu(run_umvu, f"""
        W={area}
        vu_insmod vufuse || exit 90
        {bins}/grab $UMVU_PID 8 > $W/grab.out & G=$!
        sleep 0.2
        for i in $(seq 80); do          # each one spawns a helper (true)
            kill -0 $G 2>/dev/null || break
            vumount -t vufuse -o prog=true none $W/mnt 2>/dev/null
        done
        wait
        echo "spawns=$i"
        echo "view=$(vu_lsmod)"
    """)
    assert res.returncode == 0, show(res)
    grabbed = (area / "grab.out").read_text().splitlines()
    own = [line for line in grabbed if re.search("seccomp|signalfd|eventfd", line)]
    assert not own, ("the hypervisor's descriptors, taken from a helper's "
                     "child before its exec:\n" + "\n".join(own[:12]) + "\n" + show(res))


# ---------------------------------------------------------------------------
# 2. the ABI comes from the registers, not from SECCOMP_RET_DATA


def test_own_filter_cannot_claim_other_abi(run_umvu, bins, area):
    cow, lower = mkdirs(area, "cow", "lower")
    put(lower / "file", "lower text\n")
    res = vu(run_umvu, f"""
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow {cow} {lower} || exit 91
        {bins}/retrace {lower}/file "written through a filter of my own"
        echo "status=$?"
        echo "view=$(cat {lower}/file)"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert v["status"] == "0", show(res)
    assert (lower / "file").read_text() == "lower text\n", show(res)
    assert (cow / "file").read_text() == "written through a filter of my own", show(res)
    assert v["view"] == "written through a filter of my own", show(res)


# ---------------------------------------------------------------------------
# 3. 32-bit calls are refused while a file system is mounted


def test_int80_refused_while_mounted(run_umvu, bins, area):
    cow, lower = mkdirs(area, "cow", "lower")
    put(lower / "file", "lower\n")
    res = vu(run_umvu, f"""
        I="{bins}/int80 {lower}/file"
        echo "native=$($I)"
        vu_insmod vufs || exit 90
        echo "loaded=$($I)"
        vumount -t vufs -o cow {cow} {lower} || exit 91
        echo "mounted=$($I)"
        vuumount {lower} || exit 92
        echo "unmounted=$($I)"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert int(v["native"]) >= 0, show(res)
    assert v["mounted"] == "-38", show(res)


def test_int80_works_without_a_mount(run_umvu, bins, area):
    """Only a mount closes the 32-bit entry: a loaded module alone, or a
    mount that is gone again, leaves it open."""
    cow, lower = mkdirs(area, "cow", "lower")
    put(lower / "file", "lower\n")
    res = vu(run_umvu, f"""
        I="{bins}/int80 {lower}/file"
        vu_insmod vufs || exit 90
        echo "loaded=$($I)"
        vumount -t vufs -o cow {cow} {lower} || exit 91
        vuumount {lower} || exit 92
        echo "unmounted=$($I)"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert int(v["loaded"]) >= 0, show(res)
    assert int(v["unmounted"]) >= 0, show(res)

def test_int80_bind_refused_while_mounted(run_umvu, bins, area):
    cow, lower = mkdirs(area, "cow", "lower")
    res = vu(run_umvu, f"""
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow {cow} {lower} || exit 91
        {bins}/bind80 {lower}/sock
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert sorted(os.listdir(lower)) == [], f"created in the lower directory: " \
        f"{sorted(os.listdir(lower))}\n{show(res)}"
    assert (v["bind"], v["socketcall"]) == ("-38", "-38"), show(res)



# ---------------------------------------------------------------------------
# 4. namespaces, io_uring and the new mount API while something is mounted


def test_no_way_around_the_mounts(run_umvu, bins, area):
    src, mnt = mkdirs(area, "src", "mnt")
    put(src / "f", "x\n")
    os.mkfifo(area / "go")
    os.chown(area / "go", NOBODY, NOBODY)
    res = vu(run_umvu, f"""
        B={bins} W={area}
        python3 $B/ring.py $W/ready $W/go > $W/ring.out &
        for i in $(seq 500); do [ -e $W/ready ] && break; sleep 0.02; done
        vu_insmod vufs || exit 90
        unshare -Ur true; echo "loaded_unshare_Ur=$?"
        python3 $B/escape.py loaded
        vumount -t vufs $W/src $W/mnt || exit 91
        echo go > $W/go; wait
        cat $W/ring.out
        unshare -Ur true; echo "mounted_unshare_Ur=$?"
        unshare -Urm true; echo "mounted_unshare_Urm=$?"
        python3 $B/escape.py mounted
        echo "pipeline=$(echo a b c | tr ' ' '\\n' | sort -r | wc -l)"
        echo "view=$(cat $W/mnt/f)"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    got = {tuple(line.split()[:2]): line.split()[2] for line in res.stdout.splitlines()
           if line.startswith(("loaded ", "mounted ", "before ", "after ", "setup "))
           and len(line.split()) == 3}
    got["setup", "ring"] = res.stdout.split("setup ", 1)[1].split()[0] \
        if "setup " in res.stdout else "missing"
    # before the mount everything works as natively (the baseline)
    assert v["loaded_unshare_Ur"] == "0", show(res)
    for name, native in (("unshare_user", "OK"), ("setns_user", "EINVAL"),
                         ("clone_user", "OK"), ("clone3_user", "OK"),
                         ("io_uring_setup", "OK"), ("open_tree", "OK")):
        assert got["loaded", name] == native, (name, show(res))
    # with a mount: refused
    assert v["mounted_unshare_Ur"] != "0", show(res)
    assert v["mounted_unshare_Urm"] != "0", show(res)
    assert "Operation not permitted" in res.stderr, show(res)
    for name, want in (("unshare_user", "EPERM"), ("unshare_user_mnt", "EPERM"),
                       ("setns_user", "EPERM"), ("clone_user", "EPERM"),
                       ("clone3_user", "EPERM"), ("io_uring_setup", "ENOSYS"),
                       ("open_tree", "EPERM"), ("fsopen", "EPERM"),
                       ("threads", "OK"), ("fork", "OK")):
        assert got["mounted", name] == want, (name, show(res))
    # a ring made before the first mount
    assert got["setup", "ring"] == "OK", show(res)
    assert (got["before", "enter"], got["before", "register"]) == ("OK", "OK"), show(res)
    assert (got["after", "enter"], got["after", "register"]) == ("ENOSYS", "ENOSYS"), show(res)
    assert v["pipeline"] == "3" and v["view"] == "x", show(res)


# ---------------------------------------------------------------------------
# 5. the cow store cannot be redirected to the lower layer


def test_cow_store_cannot_be_redirected(run_umvu, area):
    cow, lower = mkdirs(area, "cow", "lower")
    mkdirs(lower, "dir", "dir/sub", "keep")
    for rel in ("f1", "f2", "dir/a", "dir/sub/b", "keep/c"):
        put(lower / rel, f"{rel}\n")
    before = manifest(lower)
    res = vu(run_umvu, f"""
        C={cow} L={lower}
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow $C $L || exit 91
        rm $L/f1; echo "rm_f1=$?"
        [ -d $C/.- ] && echo "store=yes"
        mv $C/.- $C/old; echo "mv=$?"
        ln -s $L $C/.-; echo "ln=$?"
        rm -r $L/dir; echo "rm_r=$?"
        rm -f $L/f2 $L/keep/c; echo "rm_f=$?"
        echo new > $L/keep/new
        echo "view=$(cd $L && find . | sort | tr '\\n' ' ')"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    # the attack was staged as planned
    assert (v.get("store"), v["mv"], v["ln"]) == ("yes", "0", "0"), show(res)
    assert os.readlink(cow / ".-") == str(lower)
    after = manifest(lower)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"lower files changed: {sorted(changed)}\n{show(res)}"


# ---------------------------------------------------------------------------
# 6. vufuse -o pyfs= takes fusepy classes only; module code cannot end umvu


def test_pyfs_refuses_what_is_not_a_class(run_umvu, area):
    install_user_module(run_umvu, "badimport", "raise SystemExit(3)\n")
    install_user_module(run_umvu, "badinit", """
        from fuse import Operations

        class FS(Operations):
            def __init__(self, *args):
                raise SystemExit(4)
    """)
    install_user_module(run_umvu, "exitmod", "raise SystemExit(5)\n")
    (mnt,) = mkdirs(area, "mnt")
    res = vu(run_umvu, f"""
        W={area}
        vu_insmod vufuse || exit 90
        for spec in os:system sys:exit os:abort badimport:FS badinit:FS; do
            vumount -t vufuse -o pyfs=$spec "touch $W/pwned" $W/mnt 2>$W/err
            echo "$spec=$? $(cat $W/err)"
            echo "after $spec=$(vu_lsmod | tr '\\n' ' ')"
        done
        timeout 20 vu_insmod exitmod; echo "insmod=$?"
        echo "lsmod=$(vu_lsmod | tr '\\n' ' ')"
        echo "done=yes"
    """)
    v = values(res.stdout)
    assert v.get("done") == "yes", show(res)
    assert not (area / "pwned").exists(), "pyfs=os:system ran a command\n" + show(res)
    for spec in ("os:system", "sys:exit", "os:abort", "badimport:FS", "badinit:FS"):
        status, _, message = v[spec].partition(" ")
        assert status != "0", (spec, show(res))
        assert v[f"after {spec}"].startswith("vufuse:"), (spec, show(res))
    for spec in ("os:system", "sys:exit", "os:abort"):
        assert "Invalid argument" in v[spec], (spec, show(res))
        # the reason, in umvu's log
        assert re.search(rf"pyfs={spec}: .*Operations", res.stderr), (spec, show(res))
    assert v["insmod"] not in ("0", "124"), show(res)
    assert v["lsmod"].startswith("vufuse:"), show(res)
    assert res.returncode == 0, show(res)


# ---------------------------------------------------------------------------
# 7. bad input: one clear line, never a traceback


def test_view_name_not_utf8(run_umvu):
    res = run_umvu(["bash", "-c", "vuname -a; echo name=$?; vu_insmod vufs; "
                    "echo lsmod=$(vu_lsmod)"],
                   user=NOBODY, opts=("-N", "-V", "\udcff"), timeout=TIMEOUT)
    assert res.returncode == 0, show(res)
    assert "Traceback" not in res.stderr, show(res)
    v = values(res.stdout)
    assert v["name"] == "0" and v["lsmod"].startswith("vufs:"), show(res)


def test_bad_arguments(run_umvu, bins, area):
    src, mnt, m2 = mkdirs(area, "src", "mnt", "m2")
    put(src / "f", "mounted by hand\n")
    put(area / "img", "")
    res = vu(run_umvu, f"""
        W={area}
        vu_insmod $'\\xff' 2>$W/e.insmod; echo "insmod=$?"
        vuname $'\\xfe' 2>$W/e.vuname; echo "vuname=$?"
        vumount -t $'vu\\xff' none $W/mnt 2>$W/e.vumount; echo "vumount=$?"
        vu_insmod vufuse vufs || exit 90
        vumount -t vufuseext2 -o timeout=abc $W/img $W/mnt 2>$W/e.timeout
        echo "timeout=$?"
        cd $W/m2 && python3 {bins}/mount.py $W/src $W/mnt; cd /
        echo "cat=$(cat $W/mnt/f)"
        echo "m2=$(ls -A $W/m2 | wc -l)"
        vuname -a >/dev/null; echo "vuname_a=$?"
        echo "lsmod=$(vu_lsmod | sort | tr '\\n' ' ')"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    for what in ("insmod", "vumount", "timeout"):
        assert v[what] != "0", (what, show(res))
    for what in ("insmod", "vuname", "vumount", "timeout"):
        err = (area / f"e.{what}").read_text(errors="replace")
        assert "Traceback" not in err, (what, err)
        if v[what] != "0":
            assert len(err.splitlines()) == 1, (what, err)
    assert "Traceback" not in res.stderr, show(res)
    assert "null-target EFAULT" in res.stdout, show(res)
    assert "flags=-1 EINVAL" in res.stdout, show(res)
    assert "good OK" in res.stdout and v["cat"] == "mounted by hand", show(res)
    assert v["m2"] == "0", show(res)        # nothing was mounted on the cwd
    assert v["vuname_a"] == "0", show(res)
    assert v["lsmod"].startswith("vufs: ") and "vufuse: " in v["lsmod"], show(res)


def test_bad_debug_tag(run_umvu):
    res = run_umvu(["true"], user=NOBODY, opts=("-N", "-d", "zzz"), timeout=TIMEOUT)
    assert res.returncode == 2, show(res)
    # one clear message naming the tag, and where usage is explained
    assert "zzz" in res.stderr and "Traceback" not in res.stderr, show(res)
    assert re.search(r"usage|--help", res.stderr, re.I), show(res)


# ---------------------------------------------------------------------------
# 8. faults: nothing hangs, nothing is left behind


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and "pytest" not in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_vufuse_timeout_leaves_nothing(run_umvu, area, user):
    os.mkfifo(area / "img")
    os.chown(area / "img", NOBODY, NOBODY)
    mkdirs(area, "mnt")
    start = time.monotonic()
    res = vu(run_umvu, f"""
        W={area}
        vu_insmod vufuse || exit 90
        t0=$EPOCHREALTIME
        vumount -t vufuseext2 -o timeout=2 $W/img $W/mnt 2>$W/err; echo "rc=$?"
        echo "took=$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")"
        echo "err=$(cat $W/err)"
        sleep 1
        echo "left=$(ps -eo args= | grep "^[^ ]*fuse2fs $W/img" | wc -l)"
        echo "end=$EPOCHREALTIME"
    """, user=user, env={"PATH": VIEW_PATH})
    finished = time.time()
    elapsed = time.monotonic() - start
    v = values(res.stdout)
    assert v["rc"] != "0" and "timed out" in v["err"], show(res)
    assert float(v["took"]) < 6, show(res)
    assert v["left"] == "0", show(res)
    assert not _processes_mentioning(str(area / "img")), show(res)
    assert finished - float(v["end"]) < 5, f"umvu took {finished - float(v['end']):.1f}s to end\n{show(res)}"
    assert elapsed < 30 and res.returncode == 0, show(res)


def _descendants(pid: int) -> dict[int, str]:
    kids: dict[int, list[int]] = {}
    comm = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        comm[int(p)] = name
        kids.setdefault(int(fields[1]), []).append(int(p))
    out, todo = {}, [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out[k] = comm[k]
            todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("modules,sig", [("", signal.SIGTERM), ("vufs", signal.SIGTERM),
                                         ("vufs", signal.SIGHUP)],
                         ids=["untraced-TERM", "traced-TERM", "traced-HUP"])
def test_signal_ends_the_whole_view(run_umvu, area, modules, sig):
    src, mnt = mkdirs(area, "src", "mnt")
    load = f"vu_insmod vufs && vumount -t vufs {src} {mnt} || exit 90" if modules else ""
    proc = run_umvu.popen(f"""
        {load}
        (trap '' TERM HUP; exec sleep 100) | sleep 100 | cat
        echo never
    """, user=NOBODY, opts=("-N", "--kill-after", "2"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view = _descendants(proc.pid)
        if sorted(view.values()).count("sleep") == 2 and "cat" in view.values():
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the pipeline did not start: {_descendants(proc.pid)}")
    os.kill(proc.pid, sig)
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        left = {p: c for p, c in view.items() if _alive(p)}
        pytest.fail(f"umvu still runs 15 s after signal {sig}; view: {left}")
    took = time.monotonic() - t0
    left = {p: c for p, c in view.items() if _alive(p)}
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"left running: {left}\nstderr: {err}"
    assert took < 8, f"umvu took {took:.1f}s\nstderr: {err}"
    assert "never" not in out and "Traceback" not in err, err


def test_fork_storm(run_umvu, area):
    """300 short-lived processes in parallel, then 300 more still running
    (each writing through the cow mount) when the view's command ends."""
    src, mnt = mkdirs(area, "src", "mnt")
    start = time.monotonic()
    res = vu(run_umvu, f"""
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow {src} {mnt} || exit 91
        for i in $(seq 300); do sh -c true & done
        wait
        echo storm=done
        for i in $(seq 300); do sh -c "echo $i > {mnt}/f$i" & done
    """)
    took = time.monotonic() - start
    assert res.returncode == 0, show(res)
    assert values(res.stdout)["storm"] == "done", show(res)
    assert "Traceback" not in res.stderr and "did not end" not in res.stderr, show(res)
    assert len(list(src.glob("f*"))) == 300, show(res)
    assert took < 9, f"{took:.1f}s: helpers waited for?\n{show(res)}"


# ---------------------------------------------------------------------------
# 9. no half copies in the cow directory


def test_failed_copy_up_leaves_no_temporary(run_umvu, area):
    cow, = mkdirs(area, "cow")
    lower, = mkdirs(area, "lower", owner=0)
    put(lower / "secret", "root only\n", owner=0, mode=0o600)
    put(lower / "public", "all\n", owner=0, mode=0o644)
    # what a hypervisor killed in a copy-up leaves behind
    sub, = mkdirs(cow, "sub")
    put(cow / ".vufs-planted1", "half")
    put(sub / ".vufs-planted2", "half")
    res = vu(run_umvu, f"""
        C={cow} L={lower}
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow $C $L || exit 91
        echo "listing=$(ls -A $L | tr '\\n' ' ')"
        echo x >> $L/secret; echo "append=$?"
        cat $L/secret; echo "read=$?"
        echo "after=$(ls -A $L | tr '\\n' ' ')"
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert v["append"] != "0" and "Permission denied" in res.stderr, show(res)
    assert ".vufs-" not in v["listing"] + v["after"], show(res)
    left = [str(p) for p in cow.rglob(".vufs-*")]
    assert not left, f"left in the cow directory: {left}\n{show(res)}"
    assert (lower / "secret").read_text() == "root only\n"


# ---------------------------------------------------------------------------
# 10. a lower FIFO opened for writing is the FIFO


def test_lower_fifo_opens_for_writing(run_umvu, area):
    cow, lower = mkdirs(area, "cow", "lower")
    fifo = lower / "pipe"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    reader = subprocess.Popen(["timeout", "20", "cat", str(fifo)],
                              stdout=subprocess.PIPE, text=True)
    try:
        res = vu(run_umvu, f"""
            vu_insmod vufs || exit 90
            vumount -t vufs -o cow {cow} {lower} || exit 91
            timeout 10 sh -c 'echo hello-fifo > {fifo}'; echo "write=$?"
        """)
        out, _ = reader.communicate(timeout=25)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert values(res.stdout)["write"] == "0", show(res)
    assert out == "hello-fifo\n", show(res)
    assert not (cow / "pipe").exists()


# ---------------------------------------------------------------------------
# 11. served files opened by another uid


def test_memfs_opened_by_another_uid(run_umvu, area):
    home = run_umvu.home(None)
    mods = home / ".vu" / "modules"
    mods.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "memfs.py", mods / "memfs.py")
    mnt = area / "ram"                      # need not exist
    as_nobody = f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups --"
    res = vu(run_umvu, f"""
        M={mnt}
        vu_insmod memfs || exit 90
        vumount -t memfs none $M || exit 91
        echo "served by memfs" > $M/f
        echo "root=$(cat $M/f)"
        echo "nobody=$({as_nobody} cat $M/f)"
        echo "nobody_id=$({as_nobody} id -u)"
        {as_nobody} sh -c 'echo appended >> $0/f && echo mine > $0/g && cat $0/g' $M
        echo "nobody_write=$?"
        echo "root_sees=$(cat $M/f $M/g | tr '\n' ' ')"
    """, user=None, cwd="/")
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert v["root"] == "served by memfs" and v["nobody_id"] == str(NOBODY), show(res)
    assert v["nobody"] == "served by memfs", show(res)
    assert v["nobody_write"] == "0" and "mine\n" in res.stdout, show(res)
    assert v["root_sees"] == "served by memfs appended mine ", show(res)


# ---------------------------------------------------------------------------
# descriptor-based changes to a lower file: AT_EMPTY_PATH forms and chattr

EMPTY_PATH_PY = r"""
import ctypes, fcntl, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = os.open(sys.argv[1], os.O_RDONLY)
def res(r):
    return "ok" if r == 0 else os.strerror(ctypes.get_errno())
AT_EMPTY_PATH = 0x1000
print("fchmodat2=" + res(libc.syscall(452, fd, b"", 0o600, AT_EMPTY_PATH)))
print("fchownat=" + res(libc.syscall(260, fd, b"", os.getuid(), os.getgid(), AT_EMPTY_PATH)))
ts = (ctypes.c_long * 4)(1000000000, 0, 1000000000, 0)
print("utimensat=" + res(libc.syscall(280, fd, b"", ts, AT_EMPTY_PATH)))
try:
    fcntl.ioctl(fd, 0x40086602, struct.pack("i", 0x80))    # FS_IOC_SETFLAGS, noatime
    print("chattr=ok")
except OSError as exc:
    print("chattr=" + exc.strerror)
st = os.stat(sys.argv[1])
print("view=%o %d" % (st.st_mode & 0o777, st.st_mtime))
"""


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_empty_path_changes_copy_up(run_umvu, area, user):
    """fchmodat2/fchownat/utimensat(fd, "", AT_EMPTY_PATH) on a descriptor
    of a lower file change the copy, as fchmod does; chattr's ioctl on it
    is refused. The lower file keeps its mode, times and flags."""
    cow, lower = mkdirs(area, "cow", "lower")
    f = put(lower / "f", "data\n")
    before = (f.stat().st_mode, f.stat().st_mtime_ns)
    (area / "ep.py").write_text(EMPTY_PATH_PY)
    res = vu(run_umvu, f"""
        vu_insmod vufs || exit 90
        vumount -t vufs -o cow {cow} {lower} || exit 91
        python3 {area}/ep.py {lower}/f
    """, user=user)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert v["fchmodat2"] == v["fchownat"] == v["utimensat"] == "ok", show(res)
    assert v["chattr"] == "Operation not permitted", show(res)
    assert v["view"] == "600 1000000000", show(res)
    assert (f.stat().st_mode, f.stat().st_mtime_ns) == before
    assert f.read_text() == "data\n"
    lsattr = subprocess.run(["lsattr", str(f)], capture_output=True, text=True)
    if lsattr.returncode == 0:          # where the file system has flags
        assert "A" not in lsattr.stdout.split()[0], lsattr.stdout


PROTECT_PY = r"""
import ctypes, errno, mmap
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
def page(prot):
    return libc.mmap(None, 4096, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
ro, none = page(mmap.PROT_READ), page(0)          # PROT_NONE
def call(name, nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *args)
    print(name + "=" + (errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "ok"))
call("getresuid_ro", 118, ctypes.c_void_p(ro), ctypes.c_void_p(ro), ctypes.c_void_p(ro))
call("stat_none", 4, ctypes.c_void_p(none), ctypes.c_void_p(ro))
print("ro_still_zero=" + str(ctypes.string_at(ro, 12) == bytes(12)))
"""


def test_memory_protections_are_honoured(run_umvu, area):
    """A result written to a read-only page, a path read from a PROT_NONE
    one: EFAULT, as the kernel's own copies; the page is not written."""
    (area / "prot.py").write_text(PROTECT_PY)
    res = vu(run_umvu, f"""
        vu_insmod unrealuidgid vufs || exit 90
        python3 {area}/prot.py
    """)
    assert res.returncode == 0, show(res)
    v = values(res.stdout)
    assert v == {"getresuid_ro": "EFAULT", "stat_none": "EFAULT",
                 "ro_still_zero": "True"}, show(res)
