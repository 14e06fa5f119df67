"""With no module loaded a view must be invisible: real programs behave
exactly as they do natively (or as documented for umvu's own options)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time

import pytest

BASH_FEATURES = r"""
set -u
echo hello world | tr a-z A-Z | rev
printf '%s\n' pear apple fig > in.txt
sort < in.txt > sorted.txt && cat sorted.txt
{ echo out; echo err >&2; } 2> err.txt | sed 's/^/piped:/'
cat err.txt
echo appended >> sorted.txt; wc -l < sorted.txt
x=$(echo sub $(echo nested $(( 6 * 7 )))); echo "$x"
(cd / && pwd; exit 4); echo "subshell status $?"
for i in 3 1 2; do (sleep 0.$i; echo "job $i") > "bg$i.out" & done
wait; cat bg1.out bg2.out bg3.out
sleep 0.2 & pid=$!; wait "$pid"; echo "waited $?"
sh -c 'exit 5' & wait $!; echo "bg status $?"
exec 3> fd3.txt; echo "via fd 3" >&3; exec 3>&-; cat fd3.txt
read -r a b <<< "left right"; echo "$b $a"
cat <<EOF | tac
line one
line two
EOF
set -o pipefail; false | true || echo "pipefail $?"
mkfifo fifo; (echo "through a fifo" > fifo &); cat fifo
seq 1 20000 | grep -c 7
coproc UPPER { tr a-z A-Z; }; echo coproc >&"${UPPER[1]}"; exec {UPPER[1]}>&-
read -r line <&"${UPPER[0]}"; echo "$line"; wait
trap 'echo trapped USR1' USR1; kill -USR1 $$; echo after trap
"""


def test_bash_features_as_native(run_umvu, run_native, tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "u").mkdir()
    want = run_native(BASH_FEATURES, cwd=tmp_path / "n")
    assert want.returncode == 0, want.stderr
    assert "HELLO" not in want.stdout and "DLROW OLLEH" in want.stdout  # sanity
    got = run_umvu(BASH_FEATURES, cwd=tmp_path / "u")
    assert (got.returncode, got.stdout, got.stderr) == \
        (want.returncode, want.stdout, want.stderr)
    for line in ("waited 0", "bg status 5", "subshell status 4", "COPROC",
                 "trapped USR1", "through a fifo", "job 1\njob 2\njob 3"):
        assert line in got.stdout


COREUTILS = """
ls -l --time-style=full-iso ../src ../src/sub
cp -a ../src copy
find copy -printf '%P %y %m %s %n %T@ %l\\n' | LC_ALL=C sort
tar --sort=name --numeric-owner -C copy -cf - . | sha256sum
tar -C copy -cf - . | tar -tvf - | LC_ALL=C sort | sha256sum
find ../src -type f -name '*.txt' -exec cat {} + | sort -n | uniq -c | sort -k1,1nr -k2 | head -5
sort -t, -k2,2n -k1,1r ../src/data.csv | head -3
du -ab copy | LC_ALL=C sort -k2
cmp ../src/big.bin copy/big.bin && echo same
"""


def test_coreutils_on_a_tree_as_native(run_umvu, run_native, tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    for i in range(30):
        (src / f"f{i:02}.txt").write_text("".join(f"{(i * j) % 17}\n" for j in range(50)))
    (src / "data.csv").write_text("".join(f"k{i},{(i * 7919) % 101}\n" for i in range(200)))
    (src / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * 40000)
    (src / "sub" / "deep" / "x.sh").write_text("#!/bin/sh\necho x\n")
    (src / "sub" / "deep" / "x.sh").chmod(0o750)
    (src / "sub" / "private").write_text("secret\n")
    (src / "sub" / "private").chmod(0o600)
    os.symlink("deep/x.sh", src / "sub" / "link")
    os.link(src / "f00.txt", src / "sub" / "hard")
    for i, p in enumerate(sorted(src.rglob("*"), reverse=True)):
        os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i), follow_symlinks=False)
    (tmp_path / "n").mkdir()
    (tmp_path / "u").mkdir()
    want = run_native(COREUTILS, cwd=tmp_path / "n")
    assert want.returncode == 0 and "same" in want.stdout, want.stderr
    got = run_umvu(COREUTILS, cwd=tmp_path / "u")
    assert (got.returncode, got.stdout, got.stderr) == \
        (want.returncode, want.stdout, want.stderr)


THREADS_PY = r"""
import hashlib, os, sys, threading
d = sys.argv[1]
errors = []
def work(i):
    try:
        path = os.path.join(d, f"t{i}")
        for r in range(1, 21):
            data = bytes([i]) * (1000 * r)
            with open(path, "wb") as f:
                f.write(data)
            os.rename(path, path + ".done")
            with open(path + ".done", "rb") as f:
                assert f.read() == data, (i, r)
            os.rename(path + ".done", path)
    except Exception as exc:
        errors.append(repr(exc))
ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
for t in ts: t.start()
for t in ts: t.join()
print("errors", errors)
print("files", sorted(os.listdir(d)) == sorted(f"t{i}" for i in range(16)))
print("sizes", {os.path.getsize(os.path.join(d, f"t{i}")) for i in range(16)})
"""


PROCESS_STATE = r"""
grep -E '^(Sig(Blk|Ign)|Cap(Inh|Prm|Eff|Bnd|Amb)|Umask|Groups)' /proc/self/status
ulimit -a; umask; pwd; id
env | grep -v -e '^_=' -e '^UMVU_' -e '^SHLVL=' | LC_ALL=C sort
ls -l /proc/self/fd/ | awk 'NR > 1 && $9 < 3 {print $9, $11}' | sed 's/:\[[0-9]*\]//'
"""


def test_process_state_passes_unchanged(run_umvu, run_native, tmp_path):
    # what a command inherits (environment, descriptors, limits, umask, signal
    # dispositions, credentials) is what it would have natively
    fd_file = tmp_path / "stdin.txt"
    fd_file.write_text("")
    with open(fd_file) as stdin:
        want = subprocess.run(["bash", "-c", PROCESS_STATE], cwd=tmp_path, stdin=stdin,
                              capture_output=True, text=True, timeout=60,
                              env=dict(run_umvu.base_env, HOME=str(run_umvu.home()),
                                       USER="root", LOGNAME="root"))
    with open(fd_file) as stdin:
        argv, env = run_umvu.command(PROCESS_STATE)
        got = subprocess.run(argv, cwd=tmp_path, stdin=stdin, env=env,
                             capture_output=True, text=True, timeout=60)
    assert want.returncode == 0 and "0 " + str(fd_file) in want.stdout, want.stderr
    assert (got.returncode, got.stdout, got.stderr) == \
        (want.returncode, want.stdout, want.stderr)


def test_shebang_scripts_and_path_lookup(run_umvu, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hello").write_text("#!/bin/sh\necho \"$0 says $1\"\n")
    (bindir / "pyhello").write_text("#!/usr/bin/env python3\nimport sys; print(sys.argv[1:])\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    res = run_umvu(f"PATH={bindir}:$PATH; hello world; pyhello a b; {bindir}/hello again")
    assert res.stdout == (f"{bindir}/hello says world\n['a', 'b']\n"
                          f"{bindir}/hello says again\n"), res.stderr
    res = run_umvu([bindir / "pyhello", "direct"])
    assert res.stdout == "['direct']\n"


def test_python_threads_file_io(run_umvu, tmp_path):
    (tmp_path / "io").mkdir()
    res = run_umvu(["python3", "-c", THREADS_PY, tmp_path / "io"])
    assert res.returncode == 0, res.stderr
    assert res.stdout == "errors []\nfiles True\nsizes {20000}\n"


PROCS_C = r"""
#define _GNU_SOURCE
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int reap(const char *what, pid_t pid, int want) {
    int st;
    if (pid < 0) { perror(what); return 1; }
    if (waitpid(pid, &st, 0) != pid) { perror("waitpid"); return 1; }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want) {
        printf("%s: status %#x\n", what, st);
        return 1;
    }
    printf("%s exited %d\n", what, want);
    return 0;
}

static void *square(void *arg) { long n = (long)arg; return (void *)(n * n); }

int main(void) {
    int bad = 0;
    volatile int shared = 0;
    pid_t pid = vfork();
    if (pid == 0) { shared = 42; _exit(5); }
    bad |= reap("vfork", pid, 5);
    printf("vfork shared %d\n", shared);

    char *argv[] = {"sh", "-c", "exit 6", NULL};
    if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0) pid = -1;
    bad |= reap("posix_spawn", pid, 6);

    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid == 0) _exit(7);
    bad |= reap("clone3", pid, 7);

    pthread_t th[12];
    long sum = 0;
    for (long i = 0; i < 12; i++) pthread_create(&th[i], NULL, square, (void *)i);
    for (int i = 0; i < 12; i++) { void *r; pthread_join(th[i], &r); sum += (long)r; }
    printf("pthreads sum %ld\n", sum);
    return bad;
}
"""

THREAD_EXEC_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *run(void *arg) {
    char *argv[] = {"echo", "exec from a thread", NULL};
    execv("/bin/echo", argv);
    perror("execv");
    return NULL;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    return 1;
}
"""


def compile_c(tmp_path, name, source):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run(["gcc", "-O1", "-pthread", "-o", exe, src], check=True,
                   timeout=60)
    return exe


def test_c_vfork_posix_spawn_clone3_pthreads(run_umvu, tmp_path):
    exe = compile_c(tmp_path, "procs", PROCS_C)
    res = run_umvu([exe])
    assert res.stdout == ("vfork exited 5\nvfork shared 42\nposix_spawn exited 6\n"
                          "clone3 exited 7\npthreads sum 506\n"), res.stderr
    assert res.returncode == 0


def test_exec_from_non_leader_thread(run_umvu, tmp_path):
    exe = compile_c(tmp_path, "thexec", THREAD_EXEC_C)
    res = run_umvu(f"{exe}; echo status $?")
    assert res.stdout == "exec from a thread\nstatus 0\n", res.stderr
    assert res.returncode == 0


DAEMON_PY = r"""
import os, sys, time
if os.fork():
    sys.exit(0)                     # the command itself exits at once
os.setsid()
if os.fork():
    os._exit(0)
fd = os.open(os.devnull, os.O_RDWR)
for n in (0, 1, 2):
    os.dup2(fd, n)                  # nothing keeps the caller's pipes open
time.sleep(1.5)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"daemon {os.getpid()} done\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


def test_waits_for_double_forked_daemon(run_umvu, tmp_path):
    out = tmp_path / "daemon.out"
    start = time.monotonic()
    res = run_umvu(["python3", "-c", DAEMON_PY, out])
    assert res.returncode == 0, res.stderr
    assert out.exists(), "umvu returned before its daemon finished"
    assert re.fullmatch(r"daemon \d+ done\n", out.read_text())
    assert time.monotonic() - start >= 1.5


@pytest.mark.parametrize("script,status", [
    ("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9),
    ("kill -15 $$", 128 + 15), ("ulimit -c 0; kill -SEGV $$", 128 + 11),
], ids=["exit0", "exit3", "SIGKILL", "SIGTERM", "SIGSEGV"])
def test_exit_status(run_umvu, script, status):
    res = run_umvu(["sh", "-c", script])
    assert res.returncode == status, res.stderr


def test_stdio_plumbing(run_umvu):
    data = "".join(f"line {i} {'x' * (i % 97)}\n" for i in range(30000))
    res = run_umvu("cat; echo to-stderr >&2; echo to-stdout", input=data)
    assert res.returncode == 0
    assert res.stdout == data + "to-stdout\n"
    assert res.stderr == "to-stderr\n"
    res = run_umvu(["sha256sum"], input=data)
    assert res.stdout.split()[0] == hashlib.sha256(data.encode()).hexdigest()


def test_sigterm_to_umvu_reaches_the_command(run_umvu):
    proc = run_umvu.popen("trap 'echo got TERM; exit 42' TERM; echo ready; "
                          "while :; do sleep 0.1; done")
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (42, "got TERM\n"), err


def test_sigterm_to_the_process_group(run_umvu):
    # kill -TERM -PGID (timeout(1), service managers, a terminal's hangup...)
    # reaches umvu and its command at once: the command dies of SIGTERM, and
    # umvu must report just that (143), whichever of the two sees it first
    outcomes = []
    for _ in range(15):
        proc = run_umvu.popen("echo ready; sleep 30")     # its own session
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        outcomes.append((proc.returncode, err))
    assert outcomes == [(143, "")] * 15


def test_missing_command(run_umvu):
    res = run_umvu(["no-such-command-xyz", "arg"])
    assert res.returncode == 127
    assert res.stderr == "umvu: no-such-command-xyz: command not found\n"


def test_bogus_option(run_umvu):
    res = run_umvu(["true"], opts=("--bogus",))
    assert res.returncode == 2
    assert res.stdout == ""
    errors = [l for l in res.stderr.splitlines() if l.startswith("umvu:")]
    assert len(errors) == 1 and "--bogus" in errors[0], res.stderr


def test_umvu_inside_a_view_fails_cleanly(run_umvu):
    # a tracee cannot trace (its children are the outer umvu's already): the
    # inner umvu must say so as one of "umvu's own errors" (exit 2), not crash
    res = run_umvu("umvu -N -- true; echo \"inner status $?\"")
    assert res.stdout == "inner status 2\n"
    assert "Traceback" not in res.stderr
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("umvu: "), res.stderr


def test_help_shows_examples(umvu_bin, env):
    res = subprocess.run([umvu_bin, "--help"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0
    assert "examples:" in res.stdout
    assert "vu_insmod unrealuidgid; vusu -c id" in res.stdout
    assert "umvu --trace -o umvu.log" in res.stdout


def test_umvu_pid_and_viewname(run_umvu):
    proc = run_umvu.popen('echo "$UMVU_PID|$UMVU_VIEWNAME|$(vuname -U)|$(vuname -V)"',
                          opts=("-N", "-V", "testview"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == f"{proc.pid}|testview|{proc.pid}|testview\n"


def test_rc_file_runs_first_inside_the_view(run_umvu, tmp_path):
    rc = tmp_path / "rc"
    rc.write_text("echo rc: $UMVU_PID\nvu_insmod unrealuidgid\n")
    proc = run_umvu.popen("echo cmd; vu_lsmod", opts=("-f", str(rc)))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == f"rc: {proc.pid}\ncmd\nunrealuidgid: virtual uid/gid\n"


def test_home_vurc_runs_by_default_but_not_with_N(run_umvu):
    (run_umvu.home() / ".vurc").write_text("vu_insmod unrealuidgid\n")
    assert run_umvu("vu_lsmod", opts=()).stdout == "unrealuidgid: virtual uid/gid\n"
    assert run_umvu("vu_lsmod", opts=("-N",)).stdout == ""


def test_trace_log_names_intercepted_calls(run_umvu, tmp_path):
    log = tmp_path / "trace.log"
    res = run_umvu("vu_insmod unrealuidgid; id -u; id", opts=("-N", "--trace", "-o", log))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "0"
    text = log.read_text()
    assert re.search(r'^umvu: \[\d+\] vu_insmod\("unrealuidgid", 0\) = 0 <umvu>$',
                     text, re.M), text
    assert re.search(r"^umvu: \[\d+\] getuid\(\) = 0 <unrealuidgid>$", text, re.M), text
    assert re.search(r"^umvu: \[\d+\] geteuid\(\) = 0 <unrealuidgid>$", text, re.M), text
    # nothing of the trace leaks into the command's own streams
    assert "getuid" not in res.stdout + res.stderr
