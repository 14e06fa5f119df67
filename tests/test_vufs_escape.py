"""Nothing escapes the view: the kernel's own names for a process's files
(/proc/self/{cwd,fd/N,root}) show the view's paths, openat2's RESOLVE_*
rules hold on virtual paths, and io_uring (which would run path calls
behind the hypervisor's back) is refused while vufs is mounted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("_vufs_helpers")
from _vufs_helpers import make_tmp, native, write  # noqa: E402

pytest_plugins = ["_vufs_helpers"]     # fixtures: vu, tdir, udir

OPENAT2_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* oa2 DIR PATH MODE: openat2(open(DIR), PATH, {O_RDONLY, resolve=MODE});
   prints "OK <first line>" or "ERR <errno name>" */
int main(int argc, char **argv) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY;
    if (!strcmp(argv[3], "beneath")) how.resolve = RESOLVE_BENEATH;
    else if (!strcmp(argv[3], "nosymlinks")) how.resolve = RESOLVE_NO_SYMLINKS;
    else if (!strcmp(argv[3], "inroot")) how.resolve = RESOLVE_IN_ROOT;
    int dfd = open(argv[1], O_PATH | O_DIRECTORY);
    if (dfd < 0) { printf("DIR %s\n", strerrorname_np(errno)); return 2; }
    long fd = syscall(SYS_openat2, dfd, argv[2], &how, sizeof how);
    if (fd < 0) { printf("ERR %s\n", strerrorname_np(errno)); return 1; }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    printf("OK %s\n", buf);
    return 0;
}
"""

#: (path, resolve mode, what the host kernel answers)
OPENAT2_CASES = [
    ("f", "none", "OK in"),
    ("../outside", "none", "OK out"),
    ("../outside", "beneath", "ERR EXDEV"),
    ("sub/../f", "beneath", "OK in"),
    ("lnk", "beneath", "OK in"),
    ("abs", "beneath", "ERR EXDEV"),
    ("up", "beneath", "ERR EXDEV"),
    ("/etc/hostname", "beneath", "ERR EXDEV"),
    ("lnk", "nosymlinks", "ERR ELOOP"),
    ("up", "nosymlinks", "ERR ELOOP"),
    ("f", "nosymlinks", "OK in"),
    ("../outside", "inroot", "ERR ENOENT"),
    ("up", "inroot", "ERR ENOENT"),
    ("../../f", "inroot", "OK in"),
    ("/f", "inroot", "OK in"),
]


@pytest.fixture(scope="module")
def oa2():
    assert shutil.which("gcc"), "gcc builds the openat2 probe: `make deps` installs it"
    d = make_tmp("vufs-oa2-")
    with open(f"{d}/oa2.c", "w") as f:
        f.write(OPENAT2_C)
    subprocess.run(["gcc", "-O0", "-o", f"{d}/oa2", f"{d}/oa2.c"], check=True,
                   capture_output=True, timeout=120)
    yield f"{d}/oa2"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tree(tdir):
    write(f"{tdir}/src/d/f", "in\n")
    write(f"{tdir}/src/outside", "out\n")
    os.makedirs(f"{tdir}/src/d/sub")
    os.symlink("f", f"{tdir}/src/d/lnk")
    os.symlink("/etc/hostname", f"{tdir}/src/d/abs")
    os.symlink("../outside", f"{tdir}/src/d/up")
    os.mkdir(f"{tdir}/tgt")
    return tdir


def test_openat2_resolve_flags_on_virtual_paths(vu, oa2, tree):
    T = tree
    lines = "\n".join(f'{oa2} "$D" "{p}" {m}' for p, m, _ in OPENAT2_CASES)
    expected = [e for _, _, e in OPENAT2_CASES]
    host = native(f"D={T}/src/d\n{lines}")
    assert host.lines == expected, host          # the probe itself is right
    res = vu("vu_insmod vufs\nvumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED\n"
             f"D=$T/tgt/d\n{lines}\n", env={"T": T})
    got = dict(zip([f"{p} {m}" for p, m, _ in OPENAT2_CASES], res.lines))
    assert got == dict(zip(got, expected)) and len(res.lines) == len(expected), res


def test_proc_self_names_are_virtual(vu, tree):
    T = tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        cd $T/tgt/d
        exec 3< $T/tgt/d/f 4< $T/tgt/d
        echo "== shell"; readlink /proc/self/cwd /proc/$$/cwd /proc/$$/fd/3 /proc/$$/fd/4 /proc/self/root
        echo "== child"; python3 -c 'import os; print(os.getcwd()); [print(os.readlink(f"/proc/self/{n}")) for n in ("cwd", "fd/3", "fd/4", "root")]'
        echo "== ls-l"; ls -l /proc/$$/fd/3 | sed 's/.* -> //'
        echo "== through"; cat /proc/$$/fd/4/f /proc/$$/fd/4/../outside; ls /proc/self/cwd/
        echo "== up"; cd ..; readlink /proc/self/cwd; pwd -P
        """, env={"T": T})
    s = res.sections()
    d = f"{T}/tgt/d"
    assert s["shell"].split("\n") == [d, d, f"{d}/f", d, "/"], res
    assert s["child"].split("\n") == [d, d, f"{d}/f", d, "/"], res
    assert s["ls-l"] == f"{d}/f", res
    assert s["through"] == "in\nout\nabs\nf\nlnk\nsub\nup", res
    assert s["up"] == f"{T}/tgt\n{T}/tgt", res


@pytest.mark.skipif(os.path.lexists("/unreal"), reason="the host has a /unreal")
def test_proc_self_through_a_mount_is_the_caller(vu, tree):
    """`/unreal/proc/self` is /proc/self of the process that looks, not of
    the hypervisor: X and /unreal/X agree for /proc too."""
    T = tree
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs / /unreal || echo MOUNT-FAILED
        cd $T/tgt
        echo "== pid"; echo $$
        read -r pid rest < /proc/self/stat; echo "$pid"
        read -r pid rest < /unreal/proc/self/stat; echo "$pid"
        echo "== cwd"; readlink /proc/self/cwd; readlink /unreal/proc/self/cwd
        echo "== comm"; cat /proc/self/comm /unreal/proc/self/comm
        """, env={"T": T})
    s = res.sections()
    pid = s["pid"].split("\n")
    assert pid[0] == pid[1] == pid[2], res
    assert s["cwd"] == f"{T}/tgt\n{T}/tgt", res
    assert s["comm"] == "cat\ncat", res


IO_URING = """\
python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = (ctypes.c_char * 120)()
fd = libc.syscall(425, 4, params)
err = ctypes.get_errno()
print("io_uring_setup", "ok" if fd >= 0 else os.strerror(err))
EOF
"""


def test_io_uring_refused_while_vufs_mounted(vu, tree):
    T = tree
    host = native(IO_URING)
    if host.lines != ["io_uring_setup ok"]:
        pytest.skip(f"io_uring not available on this host: {host.out}{host.err}")
    res = vu("vu_insmod vufs\n" + IO_URING +
             "vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED\n" + IO_URING,
             env={"T": T})
    assert res.lines == ["io_uring_setup ok", "io_uring_setup Function not implemented"], res


@pytest.mark.skipif(os.path.lexists("/unreal"), reason="the host has a /unreal")
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(8) needs root")
def test_chroot_into_a_mount_names_paths_from_the_new_root(vu, tree):
    """After chroot into a vufs mount, every name the process is told is
    relative to its new root, as the kernel does: getcwd(), /proc/self/cwd
    and /proc/self/root; the old location never shows."""
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs / /unreal || echo MOUNT-FAILED
        chroot /unreal /bin/bash -c '
            cd /tmp
            echo "== names"; readlink /proc/self/root /proc/self/cwd; pwd; /bin/pwd
            python3 -c "import os; print(os.getcwd())"
            echo "== up"; cd /; cd ..; pwd -P; ls -d /unreal 2>&1 | sed "s/.*: //"'
        """)
    s = res.sections()
    assert s["names"] == "/\n/tmp\n/tmp\n/tmp\n/tmp", res
    assert s["up"] == "/\nNo such file or directory", res


def test_proc_self_exe_of_a_program_run_from_a_mount(vu, tree):
    """A program executed by its name in the view sees that name as
    /proc/self/exe (the host copy in SOURCE must not show)."""
    T = tree
    shutil.copy("/usr/bin/readlink", f"{T}/src/rl")
    res = vu("""\
        vu_insmod vufs
        vumount -t vufs $T/src $T/tgt || echo MOUNT-FAILED
        $T/tgt/rl /proc/self/exe
        cd $T/tgt && ./rl /proc/self/exe
        python3 -c 'import os, subprocess; print(subprocess.run(["'$T'/tgt/rl", "/proc/self/exe"], capture_output=True, text=True).stdout.strip())'
        """, env={"T": T})
    assert res.lines == [f"{T}/tgt/rl"] * 3, res
