"""unrealuidgid: virtual uids/gids/groups, per process, copied at fork.
Every test runs as root and as the unprivileged uid 65534 (`user` fixture)."""

from __future__ import annotations

import os
import shlex
import subprocess
import textwrap

from conftest import NOBODY

ROOT_ID = "uid=0(root) gid=0(root) groups=0(root)"


def real_id(user) -> int:
    return 0 if user is None else NOBODY


def py(code: str) -> str:
    """A python3 -c command line for a bash script."""
    return "python3 -c '%s'" % textwrap.dedent(code).replace("'", "'\\''")


def py_as_root(code: str) -> str:
    """The same, run by virtual root (vusu keeps the environment)."""
    return "vusu -m -c %s" % shlex.quote(py(code))


def test_vusu_id_is_root(run_umvu, user):
    res = run_umvu("vu_insmod unrealuidgid && vusu -c id && id -u", user=user)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{ROOT_ID}\n{real_id(user)}\n"
    assert res.stderr == ""


def test_vusu_without_the_module(run_umvu, unprivileged):
    res = run_umvu("vusu -c id", user=NOBODY)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == ("vusu: cannot become root: Operation not permitted "
                          "(is unrealuidgid loaded?)\n")


TRYSET = """
import os, subprocess
def tryset(f, *a):
    try:
        f(*a); return "ok"
    except PermissionError:
        return "EPERM"
"""


def test_set_ids_follow_the_kernels_rules(run_umvu, user):
    # virtual root may set any id and come back through a saved 0; setuid
    # as root drops for good; a non-root process moves only between its ids
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root(TRYSET + """
print(os.getresuid(), os.getresgid())
os.setresuid(-1, 5, -1)
print(os.getresuid(), os.geteuid(), os.getuid())
print(tryset(os.setresuid, 7, 7, 7), tryset(os.setresuid, 5, 0, 5), os.getresuid())
os.setreuid(7, 8)
print(os.getresuid())
print(tryset(os.setresuid, 0, 0, 0), tryset(os.setresuid, 8, 7, 8), os.getresuid())
print(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip())
""") + "\n" + py_as_root(TRYSET + """
os.setgid(1); os.setuid(1)
print(os.getresuid(), os.getresgid(), os.getuid(), os.geteuid())
print(tryset(os.setuid, 0), tryset(os.setgid, 0), tryset(os.setgroups, [0]))
print(subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip())
"""), user=user)
    assert res.stdout == textwrap.dedent("""\
        (0, 0, 0) (0, 0, 0)
        (0, 5, 0) 5 0
        EPERM ok (5, 0, 5)
        (7, 8, 8)
        EPERM ok (8, 7, 8)
        7
        (1, 1, 1) (1, 1, 1) 1 1
        EPERM EPERM EPERM
        daemon
    """), res.stderr


def test_plain_process_cannot_become_root(run_umvu, unprivileged):
    # what mount(8) checks before it mounts for a plain user: setuid(0)
    # must fail; vusu is how one becomes root
    res = run_umvu("vu_insmod unrealuidgid\n" + py("""
        import os
        for f, a in ((os.setuid, 0), (os.setresuid, 0), (os.setgid, 0), (os.setgroups, [0])):
            try:
                f(*([a] * (3 if f is os.setresuid else 1)))
                print("ok")
            except PermissionError:
                print("EPERM")
        print(os.getresuid())
    """) + "\nvusu -c 'id -u'", user=NOBODY)
    assert res.stdout.splitlines() == ["EPERM", "EPERM", "EPERM", "EPERM",
                                       f"({NOBODY}, {NOBODY}, {NOBODY})", "0"], res.stderr


def test_ids_inherited_and_copied(run_umvu, user, workdir):
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root("""
        import os, subprocess
        os.setresgid(1, 1, 1); os.setresuid(1, 1, 0)    # 0 saved: back later
        # a child (fork + exec) starts with the parent ids
        print(subprocess.run(["id"], capture_output=True, text=True).stdout.strip())
        os.setresuid(0, 0, 0)
        # a child change stays in the child
        pid = os.fork()
        if pid == 0:
            os.setresuid(2, 2, 2)
            os._exit(0 if os.getresuid() == (2, 2, 2) else 1)
        print("child", os.waitpid(pid, 0)[1], "parent", os.getresuid())
        # a parent change after the fork does not reach the child
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w); os.read(r, 1)
            os._exit(os.getresuid()[0])
        os.setresuid(3, 3, 3); os.close(w)
        print("child kept", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """) + "\nid -u; vusu -c 'id -u; sh -c \"id -u\"'; id -u", user=user)
    r = real_id(user)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("uid=1(daemon) gid=1(daemon) groups=1(daemon)"), res.stderr
    assert lines[1:] == ["child 0 parent (0, 0, 0)", "child kept 0",
                         str(r), "0", "0", str(r)], res.stderr


def test_exec_from_a_thread_keeps_virtual_ids(run_umvu, user):
    # the execing thread takes over the process (and the leader's pid)
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root("""
        import os, threading, time
        os.setresgid(8, 8, 8); os.setresuid(7, 7, 7)
        pid = os.getpid()
        def run():
            os.execv("/bin/sh", ["sh", "-c", f"echo $$ {pid}; id -u; id -g"])
        threading.Thread(target=run).start()
        time.sleep(30)
    """) + "\necho \"status $?\"; id -u", user=user)
    pids, *rest = res.stdout.splitlines()
    a, b = pids.split()
    assert a == b, "after exec the process must keep its pid"
    assert rest == ["7", "8", "status 0", str(real_id(user))], res.stderr


def test_rmmod_drops_virtual_ids(run_umvu, user):
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root("""
        import os, subprocess
        os.setgroups([9]); os.setresuid(5, 5, 5)
        print(os.getuid(), os.getgroups())
        subprocess.run(["vu_rmmod", "unrealuidgid"], check=True)
        print(os.getuid(), os.getgroups())      # the kernel answers again
        subprocess.run(["vu_insmod", "unrealuidgid"], check=True)
        print(os.getuid(), os.getgroups())      # a fresh start from the real ids
    """), user=user)
    r = real_id(user)
    groups = os.getgroups() if user is None else []
    assert res.stdout == f"5 [9]\n{r} {groups}\n{r} {groups}\n", res.stderr


def test_groups(run_umvu, user):
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root("""
        import ctypes, os, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        os.setgroups([4, 24, 27])
        print(os.getgroups(), libc.getgroups(0, None))
        buf = (ctypes.c_uint * 2)()
        print(libc.getgroups(2, buf), ctypes.get_errno())
        print(subprocess.run(["id", "-G"], capture_output=True, text=True).stdout.strip())
        os.setgroups([])
        print(os.getgroups())
        os.setgroups(list(range(1000, 1300)))
        print(len(os.getgroups()), os.getgroups()[-1])
    """) + "\nvusu -c 'id -G'", user=user)
    assert res.stdout == textwrap.dedent("""\
        [4, 24, 27] 3
        -1 22
        0 4 24 27
        []
        300 1299
        0
    """), res.stderr


ERRNO_PY = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ret = libc.syscall(ctypes.c_long(nr), *args)
    print(name, ret, errno.errorcode.get(ctypes.get_errno()) if ret < 0 else "")
BAD = ctypes.c_long(0xdead0000)     # not mapped
KERNEL = ctypes.c_ulong(0xffffffffdead0000)     # e.g. a sign-extended int
buf = (ctypes.c_uint * 8)()
"""


def test_bad_pointers_give_efault(run_umvu, user):
    # a call the module answers must fail as the kernel's would
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root(ERRNO_PY + """
call("getresuid", 118, BAD, BAD, BAD)
call("getresgid", 120, None, None, None)
call("setgroups", 116, 2, BAD)
call("setgroups", 116, 2, buf)
call("getgroups", 115, 64, BAD)
call("getresuid", 118, KERNEL, KERNEL, KERNEL)
call("setgroups", 116, 1, KERNEL)
    """), user=user)
    assert res.stdout.splitlines() == [
        "getresuid -1 EFAULT", "getresgid -1 EFAULT", "setgroups -1 EFAULT",
        "setgroups 0 ", "getgroups -1 EFAULT", "getresuid -1 EFAULT",
        "setgroups -1 EFAULT"], res.stderr


def test_negative_group_count_gives_einval(run_umvu, user):
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root(ERRNO_PY + """
call("setgroups", 116, 2, buf)
call("getgroups", 115, ctypes.c_int(-1), buf)
call("setgroups", 116, ctypes.c_int(-1), buf)
call("getgroups", 115, 1, buf)
call("getgroups", 115, 0, None)
    """), user=user)
    assert res.stdout.splitlines() == [
        "setgroups 0 ", "getgroups -1 EINVAL", "setgroups -1 EINVAL",
        "getgroups -1 EINVAL", "getgroups 2 "], res.stderr


def test_threads_share_the_virtual_ids(run_umvu, user):
    res = run_umvu("vu_insmod unrealuidgid\n" + py_as_root("""
        import os, threading
        start, seen = threading.Barrier(9), []
        def work():
            start.wait()
            seen.append(os.getresuid() + os.getresgid())
        ts = [threading.Thread(target=work) for _ in range(8)]
        for t in ts: t.start()
        os.setresgid(11, 12, 13); os.setresuid(21, 22, 23)
        start.wait()
        for t in ts: t.join()
        print(set(seen))
    """), user=user)
    assert res.stdout == "{(21, 22, 23, 11, 12, 13)}\n", res.stderr


def test_virtual_root_has_real_credentials_on_files(run_umvu, user, workdir):
    res = run_umvu(f"""
        vu_insmod unrealuidgid
        vusu -c 'touch {workdir}/made-by-root; mkdir {workdir}/dir; id -u'
        vusu -c 'cat /etc/shadow > /dev/null' 2>/dev/null; echo "shadow $?"
    """, user=user)
    want_shadow = 0 if user is None else 1
    assert res.stdout == f"0\nshadow {want_shadow}\n", res.stderr
    for name in ("made-by-root", "dir"):
        st = os.stat(workdir / name)
        assert (st.st_uid, st.st_gid) == (real_id(user), real_id(user))


def test_vusu_login_and_environment(run_umvu, user):
    # -l: a login shell of the user, in the user's home, with a clean
    # environment (daemon: home /usr/sbin, no dot files to run)
    # root's home is /root where the real user can read it; elsewhere the
    # user's own stays (files are read with the real credentials: bash would
    # only complain that /root/.bashrc cannot be read)
    res = run_umvu("""
        echo "$HOME"
        vu_insmod unrealuidgid
        vusu -c 'echo "$FOO $USER $HOME"'
        vusu -l -s /bin/sh -c 'id; pwd; echo "[$FOO] $TERM $USER $HOME"' daemon
        vusu nosuchuser; echo "status $?"
    """, user=user, extra_env={"FOO": "kept", "TERM": "xterm"})
    home, rest = res.stdout.split("\n", 1)
    root_home = "/root" if user is None else home
    assert rest == (f"kept root {root_home}\n"
                          "uid=1(daemon) gid=1(daemon) groups=1(daemon)\n"
                          "/usr/sbin\n[] xterm daemon /usr/sbin\nstatus 1\n"), res.stderr
    assert res.stderr == "vusu: user nosuchuser does not exist\n"


FORKER_C = r"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int bad = 0;
    for (int i = 0; i < atoi(argv[1]); i++) {
        pid_t a = fork();
        if (a == 0) _exit(syscall(SYS_geteuid) == 0 ? 0 : 1);   /* trapped at once */
        pid_t b = fork();
        if (b == 0) _exit(syscall(SYS_geteuid) == 0 ? 0 : 1);
        int sa, sb;
        waitpid(a, &sa, 0);
        waitpid(b, &sb, 0);
        bad |= sa | sb;
    }
    return bad != 0;
}
"""


def test_forks_whose_children_trap_at_once(run_umvu, tmp_path):
    # Four processes fork 4000 children between them; each child makes a
    # call unrealuidgid answers as its very first action. Every such call
    # must be answered, whatever order the kernel reports the parent's fork
    # event and the child's first stop in (natively this takes 0.5 s).
    src = tmp_path / "forker.c"
    src.write_text(FORKER_C)
    subprocess.run(["gcc", "-O1", "-o", tmp_path / "forker", src], check=True, timeout=60)
    res = run_umvu(f"""
        vu_insmod unrealuidgid
        for j in 1 2 3 4; do {tmp_path}/forker 500 & pids="$pids $!"; done
        for p in $pids; do wait $p || echo "forker failed $?"; done; echo done
    """)
    assert (res.returncode, res.stdout) == (0, "done\n"), res.stderr


def test_setfsuid_never_fails(run_umvu, unprivileged):
    """setfsuid returns the old fs id whether or not it may set the new one
    (the kernel's rule): a plain process asking for another id keeps its own."""
    res = run_umvu("vu_insmod unrealuidgid\n" + py("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.syscall(122, 5), libc.syscall(122, 0xffffffff))
    """), user=NOBODY)
    assert res.stdout == f"{NOBODY} {NOBODY}\n", res.stderr
