"""Lazy attach: a view with no module loaded traces nothing.

Its processes carry only a seccomp filter (mount/umount2 and the control
path go to the hypervisor through seccomp user notification) and the
hypervisor is their child subreaper. The first module that needs trapping
(vufs, unrealuidgid) makes the hypervisor PTRACE_SEIZE every process and
thread of the view that exists at that moment; from then on they are
virtualized as if they had been traced from the start.

Every test runs a real umvu on a bash script and checks what the programs
inside see; the processes that matter are started *before* the first
vu_insmod and are then asked, through fifos, to look at the view. Waits are
polls with a deadline (`waitfor`) or fifo rendezvous bounded by timeout(1).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess

import pytest

from conftest import NOBODY, nobody_dir

TIMEOUT = 40        # one session; a hang fails the test (run_umvu kills it)

# bash helpers every script starts with ($W: the scratch directory)
PRELUDE = r"""
set -u
fail() {        # fail WHY: stop, and take the background jobs along
    echo "FAIL: $*" >&2
    local j; for j in $(jobs -p); do kill -9 "$j"; done 2>/dev/null
    exit 99
}
waitfor() {     # waitfor WHAT CMD...: poll CMD until it succeeds, at most 10 s
    local what=$1 i; shift
    for ((i = 0; i < 500; i++)); do "$@" && return 0; sleep 0.02; done
    fail "timed out waiting for $what"
}
tracer() {      # tracer PID[/task/TID]: its TracerPid
    local k v
    while read -r k v; do
        [ "$k" = TracerPid: ] && { echo "$v"; return; }
    done < "/proc/$1/status"
    echo gone
}
state() {       # state PID: the letter of its State: line
    local k v
    while read -r k v _; do
        [ "$k" = State: ] && { echo "$v"; return; }
    done < "/proc/$1/status"
    echo gone
}
ask() {         # ask SERVER REQUEST: one round trip through $W/SERVER.req/.resp
    timeout 10 sh -c 'printf "%s\n" "$1" > "$2"' sh "$2" "$W/$1.req" \
        || fail "$1 did not take: $2"
    timeout 10 cat "$W/$1.resp" || fail "$1 did not answer: $2"
}
"""


def run(run_umvu, script: str, workdir, user=None, **kw) -> subprocess.CompletedProcess:
    return run_umvu(PRELUDE + script, user=user, timeout=TIMEOUT,
                    extra_env={"W": str(workdir)}, **kw)


def show(res) -> str:
    return f"rc={res.returncode}\n--- stdout ---\n{res.stdout}--- stderr ---\n{res.stderr}"


def umvu_pid(res) -> int:
    """The hypervisor's pid, from the script's `umvu $UMVU_PID` line."""
    m = re.search(r"^umvu (\d+)$", res.stdout, re.M)
    assert m, show(res)
    pid = int(m.group(1))
    assert pid > 1, show(res)
    return pid


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree_digest(top) -> dict:
    """Every entry below top: mode, owner, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [""] + dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            entry = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
            if os.path.isfile(p) and not os.path.islink(p):
                entry += (sha256(p),)
            out[os.path.relpath(p, top)] = entry
    return out


def make_source(workdir) -> tuple[str, str]:
    """$W/src (what the view mounts) with fresh contents; returns (token, sub)."""
    token, sub = secrets.token_hex(12), secrets.token_hex(8)
    (workdir / "src" / "sub").mkdir(parents=True)
    (workdir / "src" / "file.txt").write_text(f"view {token}\n")
    (workdir / "src" / "sub" / "deep.txt").write_text(f"deep {sub}\n")
    return token, sub


def real_uid(user) -> int:
    return NOBODY if user == NOBODY else 0


# --------------------------------------------------------------------------
# 1. untraced until the first module (root and nobody)

UID_PROBE_PY = r"""
import os, sys
go = sys.argv[1]
open(go + ".ready", "w").close()
with open(go) as f:                 # blocks until the shell says go
    f.read()
try:
    # become virtual root as vusu does (vuctl VUCTL_SU), then anybody
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(ctypes.c_long(-4), ctypes.c_int(0x5553)) != 0:
        raise OSError(ctypes.get_errno(), "VUCTL_SU failed")
    os.setresuid(4242, 4242, 4242)
    ids = os.getresuid()
except OSError as exc:
    ids = exc.strerror
with open("/proc/self/status") as f:
    real = [line.split()[1] for line in f if line.startswith("Uid:")][0]
print("probe ids", ids, "real", real, flush=True)
"""


def test_untraced_until_first_module(run_umvu, user, workdir):
    """No module: TracerPid 0 everywhere (but a seccomp filter is there);
    after vu_insmod unrealuidgid a new process, the shell and a process
    started before the insmod are all traced by $UMVU_PID, and the old
    process gets virtual ids (its real uid does not change)."""
    (workdir / "probe.py").write_text(UID_PROBE_PY)
    res = run(run_umvu, r"""
        mkfifo "$W/go"
        python3 "$W/probe.py" "$W/go" & probe=$!
        waitfor "the probe" test -e "$W/go.ready"
        echo "== before"
        grep TracerPid /proc/self/status
        echo "shell $(tracer $$)"
        echo "probe $(tracer $probe)"
        grep '^Seccomp:' /proc/self/status
        echo "== after"
        vu_insmod unrealuidgid || fail "vu_insmod unrealuidgid"
        grep TracerPid /proc/self/status
        echo "shell $(tracer $$)"
        echo "probe $(tracer $probe)"
        timeout 10 sh -c 'echo go > "$1"' sh "$W/go" || fail "probe gone"
        wait $probe; echo "probe status $?"
        echo "umvu $UMVU_PID"
        """, workdir, user=user)
    pid = umvu_pid(res)
    assert res.returncode == 0, show(res)
    assert res.stdout == (
        "== before\n"
        "TracerPid:\t0\n"
        "shell 0\n"
        "probe 0\n"
        "Seccomp:\t2\n"
        "== after\n"
        f"TracerPid:\t{pid}\n"
        f"shell {pid}\n"
        f"probe {pid}\n"
        f"probe ids (4242, 4242, 4242) real {real_uid(user)}\n"
        "probe status 0\n"
        f"umvu {pid}\n"), show(res)
    assert res.stderr == "", show(res)


# --------------------------------------------------------------------------
# 2. processes started before vu_insmod see the mounts (root and nobody)

SERVER_PY = r"""
import os, sys
req, resp = sys.argv[1] + ".req", sys.argv[1] + ".resp"
while True:
    with open(req) as f:
        line = f.read().strip()
    cmd, _, arg = line.partition(" ")
    try:
        if cmd == "cat":
            with open(arg) as f:
                out = "OK " + f.read().strip()
        elif cmd == "ls":
            out = "OK " + " ".join(sorted(os.listdir(arg)))
        elif cmd == "quit":
            out = "bye"
        else:
            out = "BAD " + line
    except OSError as exc:
        out = "ERR " + exc.strerror
    with open(resp, "w") as f:
        f.write(f"{os.getpid()} {out}\n")
    if cmd == "quit":
        break
"""

# the same server in bash, builtins only: the subshell itself opens the files
BASH_SERVER = r"""
( shopt -s nullglob
  while :; do
    read -r cmd arg < "$W/sh.req" || continue
    case $cmd in
      cat) if IFS= read -r line < "$arg"; then out="OK $line"; else out=ERR; fi ;;
      ls)  names=("$arg"/*); out="OK ${names[*]##*/}" ;;
      quit) out=bye ;;
      *) out="BAD $cmd" ;;
    esac
    echo "$BASHPID $out" > "$W/sh.resp"
    [ "$cmd" = quit ] && exit 0
  done ) 2>/dev/null &
"""


def test_preexisting_processes_see_the_mount(run_umvu, user, workdir):
    """A python3 process and a bash subshell (builtins only) started before
    `vu_insmod vufs`, and the shell itself, see what vufs mounts afterwards:
    on a path that does not exist on the host and over a host directory.
    Nothing on the host changes."""
    token, sub = make_source(workdir)
    (workdir / "shadow").mkdir()
    (workdir / "shadow" / "file.txt").write_text("host content\n")
    (workdir / "server.py").write_text(SERVER_PY)
    src_before, shadow_before = tree_digest(workdir / "src"), tree_digest(workdir / "shadow")
    res = run(run_umvu, r"""
        T=$W/unreal S=$W/shadow
        mkfifo "$W/py.req" "$W/py.resp" "$W/sh.req" "$W/sh.resp"
        python3 "$W/server.py" "$W/py" & py=$!
        """ + BASH_SERVER + r"""
        sh=$!
        echo "pids $py $sh"
        echo "== before"
        ask py "cat $T/file.txt"
        ask py "cat $S/file.txt"
        ask sh "cat $S/file.txt"
        vu_insmod vufs || fail "vu_insmod vufs"
        vumount -t vufs "$W/src" "$T" || fail "vumount $T"
        vumount -t vufs "$W/src" "$S" || fail "vumount $S"
        echo "== after"
        ask py "cat $T/file.txt"
        ask py "ls $T"
        ask py "cat $T/sub/deep.txt"
        ask py "cat $S/file.txt"
        ask sh "cat $T/file.txt"
        ask sh "ls $T"
        ask sh "cat $S/file.txt"
        echo "== shell"
        IFS= read -r line < "$T/file.txt" && echo "$line"
        IFS= read -r line < "$S/sub/deep.txt" && echo "$line"
        [ -d "$T/sub" ] && echo "a directory"
        cd "$T" && echo * && cd /
        echo "== tracers"
        echo "py $(tracer $py) sh $(tracer $sh) shell $(tracer $$)"
        ask py quit
        ask sh quit
        wait $py; echo "py status $?"
        wait $sh; echo "sh status $?"
        echo "umvu $UMVU_PID"
        """, workdir, user=user)
    pid = umvu_pid(res)
    m = re.search(r"^pids (\d+) (\d+)$", res.stdout, re.M)
    assert m, show(res)
    py, sh = m.groups()
    assert res.returncode == 0, show(res)
    assert res.stdout == (
        f"pids {py} {sh}\n"
        "== before\n"
        f"{py} ERR No such file or directory\n"
        f"{py} OK host content\n"
        f"{sh} OK host content\n"
        "== after\n"
        f"{py} OK view {token}\n"
        f"{py} OK file.txt sub\n"
        f"{py} OK deep {sub}\n"
        f"{py} OK view {token}\n"
        f"{sh} OK view {token}\n"
        f"{sh} OK file.txt sub\n"
        f"{sh} OK view {token}\n"
        "== shell\n"
        f"view {token}\n"
        f"deep {sub}\n"
        "a directory\n"
        "file.txt sub\n"
        "== tracers\n"
        f"py {pid} sh {pid} shell {pid}\n"
        f"{py} bye\n"
        f"{sh} bye\n"
        "py status 0\n"
        "sh status 0\n"
        f"umvu {pid}\n"), show(res)
    assert res.stderr == "", show(res)
    # the host: no mount point appeared, the source and the shadowed tree
    # are as they were
    assert not os.path.lexists(workdir / "unreal")
    assert tree_digest(workdir / "src") == src_before
    assert tree_digest(workdir / "shadow") == shadow_before
    assert (workdir / "shadow" / "file.txt").read_text() == "host content\n"


# --------------------------------------------------------------------------
# 3. a multi-threaded process started before vu_insmod

THREADS_PY = r"""
import hashlib, os, sys, threading, time
W = sys.argv[1]
fd = os.open(os.path.join(W, "feed"), os.O_RDONLY)   # pairs with the shell's exec 3>
tids, ready = {}, threading.Barrier(3)
result, ticks, stop = {}, [0], threading.Event()

def read_mount(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return "ERR " + exc.strerror

def reader():
    tids["reader"] = threading.get_native_id()
    ready.wait()
    data = b""
    while True:                      # blocked here while vu_insmod runs
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    path, _, payload = data.partition(b"\n")
    result["payload"] = hashlib.sha256(payload).hexdigest()
    result["path"] = path.decode()
    result["reader"] = read_mount(result["path"])

def sleeper():
    tids["sleeper"] = threading.get_native_id()
    ready.wait()
    while not stop.is_set():         # blocked in clock_nanosleep mostly
        time.sleep(0.02)
        ticks[0] += 1
    result["sleeper"] = read_mount(result["path"])

threads = [threading.Thread(target=reader), threading.Thread(target=sleeper)]
for t in threads:
    t.start()
ready.wait()
with open(os.path.join(W, "tids.tmp"), "w") as f:
    f.write(f"{tids['reader']} {tids['sleeper']}\n")
os.rename(os.path.join(W, "tids.tmp"), os.path.join(W, "tids"))
threads[0].join()                    # the main thread: blocked in a futex
n0, deadline = ticks[0], time.monotonic() + 10
while ticks[0] < n0 + 3 and time.monotonic() < deadline:
    time.sleep(0.01)
kept = ticks[0] >= n0 + 3
stop.set()
threads[1].join()
late = threading.Thread(target=lambda: result.__setitem__("new", read_mount(result["path"])))
late.start()
late.join()
print("payload", result["payload"])
print("reader", result["reader"])
print("sleeper kept ticking", kept)
print("sleeper", result["sleeper"])
print("new thread", result["new"], flush=True)
"""


def test_threads_blocked_across_the_insmod(run_umvu, tmp_path):
    """python3 with a thread blocked in read(2) on a fifo, one looping in
    time.sleep and the main thread in join, all before `vu_insmod vufs`:
    every thread gets traced, the read completes with the right bytes after
    the insmod, the sleeper keeps running, and the old threads and a new
    one see the vufs mount."""
    token, _ = make_source(tmp_path)
    (tmp_path / "threads.py").write_text(THREADS_PY)
    payload = os.urandom(30000).hex()       # 60000 bytes: fits in the pipe
    (tmp_path / "payload").write_text(payload)
    res = run(run_umvu, r"""
        T=$W/unreal
        mkfifo "$W/feed"
        python3 "$W/threads.py" "$W" & py=$!
        exec 3> "$W/feed"
        waitfor "the thread ids" test -e "$W/tids"
        read -r rtid stid < "$W/tids"
        in_read() { local nr; read -r nr _ < "/proc/$py/task/$rtid/syscall"; [ "$nr" = 0 ]; }
        waitfor "the reader to block in read" in_read
        ntasks() { local t n=0; for t in /proc/$py/task/*; do n=$((n + 1)); done; echo $n; }
        echo "tasks before $(ntasks)"
        vu_insmod vufs || fail "vu_insmod vufs"
        vumount -t vufs "$W/src" "$T" || fail "vumount"
        echo "tasks after $(ntasks)"
        waitfor "the reader to be back in read" in_read
        echo "reader still in read"
        for t in /proc/$py/task/*; do echo "task $(tracer "$py/task/${t##*/}")"; done
        { printf '%s\n' "$T/file.txt"; cat "$W/payload"; } >&3
        exec 3>&-
        wait $py; echo "status $?"
        echo "umvu $UMVU_PID"
        """, tmp_path)
    pid = umvu_pid(res)
    want_payload = hashlib.sha256(payload.encode()).hexdigest()
    assert res.returncode == 0, show(res)
    assert res.stdout == (
        "tasks before 3\n"
        "tasks after 3\n"
        "reader still in read\n"
        + f"task {pid}\n" * 3 +
        f"payload {want_payload}\n"
        f"reader view {token}\n"
        "sleeper kept ticking True\n"
        f"sleeper view {token}\n"
        f"new thread view {token}\n"
        "status 0\n"
        f"umvu {pid}\n"), show(res)
    assert res.stderr == "", show(res)
    assert not os.path.lexists(tmp_path / "unreal")


# --------------------------------------------------------------------------
# 4. a stopped job across the insmod

# $1: file to read after the stop, $2: where to write it; exits 5
SELF_STOP = r"""
bash -c 'kill -STOP $$; IFS= read -r line < "$1" && echo "got $line" > "$2"; exit 5' \
    bash "$T/file.txt" "$W/out" & job=$!
"""

STOPPED_BY_SHELL = r"""
python3 -c '
import os, sys, time
open(sys.argv[3], "w").close()
while not os.path.exists(sys.argv[4]):
    time.sleep(0.01)
with open(sys.argv[1]) as f:
    line = f.read().strip()
with open(sys.argv[2], "w") as f:
    f.write("got " + line + "\n")
sys.exit(5)' "$T/file.txt" "$W/out" "$W/ready" "$W/go" & job=$!
waitfor "the job to start" test -e "$W/ready"
kill -STOP $job
"""


@pytest.mark.parametrize("how", [SELF_STOP, STOPPED_BY_SHELL],
                         ids=["stops-itself", "stopped-by-the-shell"])
def test_stopped_job_across_the_insmod(run_umvu, tmp_path, how):
    """A background job in SIGSTOP while `vu_insmod vufs` attaches stays
    stopped; `kill -CONT` resumes it, it reads through the new mount, and
    `wait` reports its exit status."""
    token, _ = make_source(tmp_path)
    res = run(run_umvu, r"""
        T=$W/unreal
        """ + how + r"""
        is_stopped() { case $(state $job) in [Tt]) true ;; *) false ;; esac; }
        waitfor "the job to stop" is_stopped
        vu_insmod vufs || fail "vu_insmod vufs"
        vumount -t vufs "$W/src" "$T" || fail "vumount"
        is_stopped && echo "still stopped" || echo "state $(state $job)"
        [ -e "$W/out" ] && echo "ran while stopped"
        echo "tracer $(tracer $job)"
        touch "$W/go"
        kill -CONT $job || fail "kill -CONT"
        wait $job; echo "status $?"
        cat "$W/out"
        echo "umvu $UMVU_PID"
        """, tmp_path)
    pid = umvu_pid(res)
    assert res.returncode == 0, show(res)
    assert res.stdout == (
        "still stopped\n"
        f"tracer {pid}\n"
        "status 5\n"
        f"got view {token}\n"
        f"umvu {pid}\n"), show(res)
    assert res.stderr == "", show(res)


# --------------------------------------------------------------------------
# 5. exit status and daemons with no module (root and nobody)

@pytest.mark.parametrize("argv,status", [
    (["sh", "-c", "exit 7"], 7), (["sh", "-c", "kill -9 $$"], 137),
    (["sh", "-c", "kill -TERM $$"], 143), (["true"], 0),
], ids=["exit7", "SIGKILL", "SIGTERM", "true"])
def test_exit_status_with_no_module(run_umvu, user, argv, status):
    res = run_umvu(argv, user=user, timeout=TIMEOUT)
    assert (res.returncode, res.stdout, res.stderr) == (status, "", ""), show(res)


def test_daemon_outliving_the_shell_is_waited_for(run_umvu, user, workdir):
    """A daemon (its parent gone, its descriptors closed) that outlives the
    view's command still runs to completion before umvu returns, and umvu
    returns the command's status, not the daemon's."""
    res = run(run_umvu, r"""
        sh -c '( while kill -0 "$2" 2>/dev/null; do sleep 0.02; done
                 echo "shell gone" > "$1/daemon.out"
                 sleep 0.5
                 echo done >> "$1/daemon.out" ) </dev/null >/dev/null 2>&1 &' sh "$W" $$
        echo launched
        exit 3
        """, workdir, user=user)
    # read right after umvu returned: the daemon must have ended by now
    out = workdir / "daemon.out"
    assert (res.returncode, res.stdout, res.stderr) == (3, "launched\n", ""), show(res)
    assert out.exists(), "umvu returned before the daemon ended"
    assert out.read_text() == "shell gone\ndone\n"


def test_orphans_are_reaped_by_the_hypervisor(run_umvu, tmp_path):
    """With no module (nothing traced), an orphan of the view is adopted by
    the hypervisor, a child subreaper, not by the host's init."""
    res = run(run_umvu, r"""
        bash -c '( while kill -0 $$ 2>/dev/null; do sleep 0.02; done
                   grep ^PPid: /proc/$BASHPID/status > "$1/ppid.tmp"
                   mv "$1/ppid.tmp" "$1/ppid" ) </dev/null >/dev/null 2>&1 &' bash "$W"
        waitfor "the orphan" test -e "$W/ppid"
        cat "$W/ppid"
        grep TracerPid /proc/self/status
        echo "umvu $UMVU_PID"
        """, tmp_path)
    pid = umvu_pid(res)
    assert res.returncode == 0, show(res)
    assert res.stdout == f"PPid:\t{pid}\nTracerPid:\t0\numvu {pid}\n", show(res)


# --------------------------------------------------------------------------
# 6. the control path with no module

def test_control_path_with_no_module(run_umvu, user, workdir):
    """vu_lsmod, vuname and a failing vu_insmod are answered through the
    notification path, and a failed insmod leaves the view untraced."""
    res = run(run_umvu, r"""
        vu_lsmod; echo "lsmod $?"
        vuname -a; echo "vuname $?"
        vuname -V
        vu_insmod nosuchmodule; echo "insmod $?"
        vu_lsmod; echo "lsmod again $?"
        grep TracerPid /proc/self/status
        echo "umvu $UMVU_PID"
        """, workdir, user=user, opts=("-N", "-V", "lazyview"))
    pid = umvu_pid(res)
    u = os.uname()
    assert res.returncode == 0, show(res)
    assert res.stdout == (
        "lsmod 0\n"
        f"{u.sysname} {u.nodename} {u.release} {u.version} {u.machine} "
        f"GNU/Linux/VUOS {pid} lazyview\n"
        "vuname 0\n"
        "lazyview\n"
        "insmod 1\n"
        "lsmod again 0\n"
        "TracerPid:\t0\n"
        f"umvu {pid}\n"), show(res)
    assert res.stderr == "vu_insmod: nosuchmodule: no such module\n", show(res)


MOUNT_PROBE_PY = r"""
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1].encode()

def call(name, *args):
    ctypes.set_errno(0)
    r = getattr(libc, name)(*args)
    e = ctypes.get_errno() if r == -1 else 0
    return f"{name} {r} {errno.errorcode.get(e, e) if e else 'ok'}"

print(call("mount", b"none", d, b"tmpfs", ctypes.c_ulong(0), None))
print(call("umount2", d, 0))
print(call("umount2", d + b"/nonexistent", 0))
print(call("syscall", ctypes.c_long(999)))        # no such syscall
r = libc.syscall(ctypes.c_long(-42))              # unknown control number
print("syscall -42 survived", r)
"""


@pytest.fixture
def nobody_work():
    d = nobody_dir("umvu-lazy-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_mount_as_nobody_with_no_module(run_umvu, unprivileged, nobody_work, env):
    """mount(2) and umount2(2) of an unprivileged user go to the hypervisor
    and come back with the kernel's own answer (EPERM, ENOENT), not ENOSYS;
    an unknown syscall number is still ENOSYS; mount(8) fails as natively."""
    workdir = nobody_work
    d = workdir / "dir"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    (workdir / "mount.py").write_text(MOUNT_PROBE_PY)
    script = r"""
        python3 "$W/mount.py" "$W/dir"; echo "probe $?"
        mount -t tmpfs none "$W/dir"; echo "mount $?"
        umount "$W/dir"; echo "umount $?"
        """
    native = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         "bash", "-c", PRELUDE + script], capture_output=True, text=True, timeout=60,
        env=dict(env, W=str(workdir)), cwd=workdir, stdin=subprocess.DEVNULL)
    # sanity: natively the kernel says EPERM
    assert native.stdout.startswith("mount -1 EPERM\n"), show(native)
    res = run(run_umvu, script, workdir, user=NOBODY)
    assert res.returncode == 0, show(res)
    want_lines = native.stdout.splitlines()
    got_lines = res.stdout.splitlines()
    assert len(got_lines) == len(want_lines), show(res)
    for want, got in zip(want_lines, got_lines):
        if want.startswith("syscall -42"):
            assert got == "syscall -42 survived -1", show(res)
        else:
            assert got == want, show(res)
    assert "Function not implemented" not in res.stderr, show(res)
    assert res.stderr == native.stderr, show(res)
    assert os.listdir(d) == []
