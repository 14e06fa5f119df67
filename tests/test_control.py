"""The helper commands and the module life cycle (the control path)."""

from __future__ import annotations

import re
import subprocess

import pytest

UNREAL = "unrealuidgid: virtual uid/gid\n"

FORTYTWO = '''
from umvu.module import Module, syscall


class FortyTwo(Module):
    name = "fortytwo"
    description = "getpid answers 4242"

    @syscall("getpid")
    def getpid(self, call):
        return 4242
'''

BROKEN = '''
from umvu.module import Module, syscall


class Broken(Module):
    name = "broken"
    description = "uname always fails"

    @syscall("uname")
    def uname(self, call):
        raise RuntimeError("deliberate failure in broken.uname")
'''


def user_module(run_umvu, name, source):
    d = run_umvu.home() / ".vu" / "modules"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.py").write_text(source)


@pytest.mark.parametrize("argv,inside_status", [
    (["vu_insmod", "unrealuidgid"], 0), (["vu_rmmod", "unrealuidgid"], 1),
    (["vu_lsmod"], 0), (["vuname", "newname"], 0),
], ids=["vu_insmod", "vu_rmmod", "vu_lsmod", "vuname"])
def test_helpers_outside_a_view(env, tmp_path, argv, inside_status):
    # the control calls are negative syscall numbers: the kernel says ENOSYS
    res = subprocess.run(argv, env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == f"{argv[0]}: not running under umvu\n"
    # ...and the same command inside a view does not say so
    argv_in = ["sh", "-c", '"$@"; echo "status $?"', "sh", *argv]
    inside = subprocess.run(["umvu", "-N", "--", *argv_in], env=env, text=True,
                            capture_output=True, timeout=60, cwd=tmp_path)
    assert "not running under umvu" not in inside.stderr
    assert inside.stdout.endswith(f"status {inside_status}\n"), inside.stderr


def test_vuname_outside_a_view_is_uname(env):
    res = subprocess.run(["vuname"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert res.stdout == subprocess.run(["uname", "-s"], capture_output=True,
                                        text=True).stdout


def test_vusu_outside_a_view_is_su(env, tmp_path):
    res = subprocess.run(["vusu", "-c", "echo via su $(id -u)"], env=env, text=True,
                         capture_output=True, timeout=60, cwd=tmp_path,
                         stdin=subprocess.DEVNULL)
    assert (res.returncode, res.stdout) == (0, "via su 0\n"), res.stderr
    # inside, vusu does not exec su: su would need its setuid bit
    inside = subprocess.run(["umvu", "-N", "--", "vusu", "-c", "echo $0 $(id -u)"],
                            env=env, text=True, capture_output=True, timeout=60,
                            cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert (inside.returncode, inside.stdout) == (0, "bash 0\n"), inside.stderr


def test_module_life_cycle(run_umvu):
    res = run_umvu("""
        vu_lsmod; echo "empty $?"
        vu_insmod unrealuidgid; echo "load $?"
        vu_lsmod
        vu_insmod unrealuidgid; echo "again $?"
        vu_insmod nosuch; echo "unknown $?"
        vu_rmmod unrealuidgid; echo "remove $?"
        vu_lsmod
        vu_rmmod unrealuidgid; echo "remove again $?"
    """)
    assert res.returncode == 0
    assert res.stdout == ("empty 0\nload 0\n" + UNREAL + "again 1\nunknown 1\n"
                          "remove 0\nremove again 1\n")
    assert res.stderr == ("vu_insmod: unrealuidgid: module already loaded\n"
                          "vu_insmod: nosuch: no such module\n"
                          "vu_rmmod: unrealuidgid: module not loaded\n")


@pytest.mark.parametrize("name", ["../unrealuidgid", "a/b", "/etc/passwd", "..",
                                  "unreal..uidgid", ""])
def test_bad_module_names_refused(run_umvu, name):
    res = run_umvu(["vu_insmod", name])
    assert res.returncode == 1
    assert res.stderr == f"vu_insmod: {name}: invalid module name\n"


@pytest.mark.parametrize("argv", [
    ["vu_insmod"], ["vu_rmmod"], ["vu_insmod", "--zork", "unrealuidgid"],
    ["vu_rmmod", "-x", "unrealuidgid"], ["vu_lsmod", "--zork"], ["vu_lsmod", "extra"],
])
def test_usage_errors(run_umvu, argv):
    res = run_umvu(argv)
    assert res.returncode == 2
    # one line, `NAME: what went wrong`
    assert res.stderr.startswith(f"{argv[0]}: ") and res.stderr.count("\n") == 1
    assert res.stderr.endswith(f" (see {argv[0]} --help)\n")
    assert res.stdout == ""


def test_permanent_module_cannot_be_removed(run_umvu):
    res = run_umvu("vu_insmod -p unrealuidgid && vu_rmmod unrealuidgid; "
                   "echo \"rmmod $?\"; vu_lsmod")
    assert res.stdout == "rmmod 1\n" + UNREAL
    assert res.stderr == "vu_rmmod: unrealuidgid: module is in use\n"


def test_user_module_from_home(run_umvu):
    user_module(run_umvu, "fortytwo", FORTYTWO)
    res = run_umvu("""
        python3 -c 'import os; print(os.getpid())'
        vu_insmod fortytwo && vu_lsmod
        python3 -c 'import os; print(os.getpid())'
        sh -c 'echo $$'
        vu_rmmod fortytwo
        python3 -c 'import os; print(os.getpid())'
    """)
    assert res.returncode == 0, res.stderr
    before, lsmod, during, shell, after = res.stdout.splitlines()
    assert lsmod == "fortytwo: getpid answers 4242"
    assert (during, shell) == ("4242", "4242")
    assert before != "4242" and after != "4242"


def test_failing_module_gives_eio_and_logs(run_umvu, tmp_path):
    user_module(run_umvu, "broken", BROKEN)
    log = tmp_path / "umvu.log"
    res = run_umvu("""
        vu_insmod broken || exit 9
        python3 -c '
import errno, os
try:
    os.uname()
except OSError as exc:
    print("uname failed with", errno.errorcode[exc.errno])'
        uname; echo "uname status $?"
        echo still alive
        vu_rmmod broken && uname -s
    """, opts=("-N", "-o", log))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ("uname failed with EIO\nuname status 1\nstill alive\n"
                          "Linux\n")
    assert "Input/output error" in res.stderr
    text = log.read_text()
    assert "module broken failed in uname" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: deliberate failure in broken.uname" in text
    assert "Traceback" not in res.stderr


def test_module_that_cannot_load(run_umvu, tmp_path):
    user_module(run_umvu, "badsyntax", "this is not python(\n")
    user_module(run_umvu, "noclass", "X = 1\n")
    log = tmp_path / "umvu.log"
    res = run_umvu("vu_insmod badsyntax; echo $?; vu_insmod noclass; echo $?; vu_lsmod",
                   opts=("-N", "-o", log))
    assert res.stdout == "1\n1\n"
    assert re.search(r"^vu_insmod: badsyntax: .*\n", res.stderr, re.M), res.stderr
    assert re.search(r"^vu_insmod: noclass: .*\n", res.stderr, re.M), res.stderr
    assert "SyntaxError" in log.read_text()


def test_view_name_can_be_changed(run_umvu):
    res = run_umvu("vuname -V; vuname renamed; vuname -V; echo $UMVU_VIEWNAME",
                   opts=("-N", "-V", "first"))
    assert res.stdout == "first\nrenamed\nfirst\n", res.stderr


BLOCKED_PY = r"""
import os, sys, threading, time
def sleeper(out):
    t0 = time.monotonic()
    os.system("sleep 1.5")                 # a child blocked in nanosleep
    out.append(round(time.monotonic() - t0, 1))
out = []
t = threading.Thread(target=sleeper, args=(out,))
t.start()
line = sys.stdin.readline()                # blocked in read(2)
t.join()
print("read", line.strip(), "slept at least 1.5:", out[0] >= 1.5, "euid", os.geteuid())
"""


def test_module_loaded_while_calls_block(run_umvu, tmp_path):
    # vu_insmod tightens the filter of every process, interrupting blocked
    # calls; they must resume as if nothing happened (no EINTR, no short sleep)
    user_module(run_umvu, "fortytwo", FORTYTWO)
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_PY)
    res = run_umvu(f"""
        (sleep 0.8; echo data) | python3 {script} & job=$!
        sleep 0.3; vu_insmod fortytwo
        wait $job; echo "status $?"; python3 -c 'import os; print(os.getpid())'
    """)
    assert res.stdout == "read data slept at least 1.5: True euid 0\nstatus 0\n4242\n", \
        res.stderr


def test_debug_messages_go_to_the_log(run_umvu, tmp_path):
    log = tmp_path / "debug.log"
    res = run_umvu("vu_insmod unrealuidgid; vu_insmod nosuch 2>/dev/null; vu_lsmod",
                   opts=("-N", "-d", "m", "-o", log))
    assert res.stdout == UNREAL and res.stderr == ""
    text = log.read_text()
    assert "umvu: module unrealuidgid loaded\n" in text
    assert "nosuch" in text
