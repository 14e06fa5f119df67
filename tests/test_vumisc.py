"""vumisc: the pace of time (seed 004) and the names of the system, as
files at a mount point. Times are compared with /proc/uptime, a real clock
no view changes; every bound is generous (the machine is shared)."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import pytest

from conftest import NOBODY

CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
/* N rounds: the vDSO's CLOCK_REALTIME, gettimeofday, time, and the real
   uptime; a pause between them */
static double uptime(void) {
    double up = 0; FILE *f = fopen("/proc/uptime", "r");
    if (f) { if (fscanf(f, "%lf", &up) != 1) up = 0; fclose(f); }
    return up;
}
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 2;
    for (int i = 0; i < rounds; i++) {
        struct timespec ts; struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &ts); gettimeofday(&tv, NULL);
        printf("%.3f %.3f %ld %.2f\n", ts.tv_sec + ts.tv_nsec / 1e9,
               tv.tv_sec + tv.tv_usec / 1e6, (long)time(NULL), uptime());
        fflush(stdout);
        if (i + 1 < rounds) usleep(1200000);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def clock_prog(tmp_path_factory):
    d = tmp_path_factory.mktemp("vumisc")
    os.chmod(d, 0o755)
    src = d / "clock.c"
    src.write_text("#include <stdlib.h>\n" + CLOCK_C)
    subprocess.run(["gcc", "-O2", "-o", str(d / "clock"), str(src)], check=True)
    return d / "clock"


def rates(lines: list[str]) -> list[float]:
    """Virtual seconds per real second between the first and last rounds,
    for clock_gettime and gettimeofday; time (whole seconds) agrees with
    clock_gettime within a second."""
    first = [float(x) for x in lines[0].split()]
    last = [float(x) for x in lines[-1].split()]
    real = last[3] - first[3]
    assert real > 0.5, lines
    assert abs((last[2] - first[2]) - (last[0] - first[0])) <= 1.01, lines
    return [(last[i] - first[i]) / real for i in range(2)]


def test_seed_pace_of_time(run_umvu, user):
    """Seed 004: echo 2 > /mnt/frequency, and date runs twice as fast."""
    res = run_umvu(textwrap.dedent("""\
        set -e
        vu_insmod vumisc
        vumount -t vumisctime none /mnt
        ls /mnt
        echo 2 > /mnt/frequency
        cat /mnt/frequency
        a=$(date +%s.%N); ua=$(cut -d' ' -f1 /proc/uptime)
        sleep 1.5
        b=$(date +%s.%N); ub=$(cut -d' ' -f1 /proc/uptime)
        echo "$a $ua $b $ub"
        date +%s
        """), user=user)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[:4] == ["base", "frequency", "offset", "2"]
    a, ua, b, ub = (float(x) for x in out[4].split())
    assert 1.4 < (b - a) / (ub - ua) < 2.6, out
    # the host's time never changed: the view is ahead by what it gained
    assert 0 < int(out[5]) - time.time() < 30


def test_vdso_calls_are_paced(run_umvu, clock_prog):
    """A C program calling clock_gettime/gettimeofday/time through the vDSO,
    started before the mount (its vDSO is patched while it runs) and after
    (patched at exec)."""
    res = run_umvu(textwrap.dedent(f"""\
        set -e
        vu_insmod vumisc
        {clock_prog} 4 > before.txt &
        sleep 0.3
        vumount -t vumisctime none /mnt
        echo 3 > /mnt/frequency
        {clock_prog} 3
        wait
        echo ---
        tail -3 before.txt
        """), timeout=90)
    assert res.returncode == 0, res.stderr
    after, before = res.stdout.split("---\n")
    for rate in rates(after.splitlines()) + rates(before.splitlines()):
        assert 2.0 < rate < 4.0, res.stdout


def test_outside_the_time_view(run_umvu, clock_prog):
    """Without a time mount (or after vuumount) time is the host's."""
    res = run_umvu(textwrap.dedent(f"""\
        set -e
        vu_insmod vumisc
        {clock_prog} 2
        vumount -t vumisctime none /mnt
        echo 5 > /mnt/frequency
        echo 100 > /mnt/offset
        vuumount /mnt
        {clock_prog} 2
        date +%s
        """))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for rate in rates(lines[:2]) + rates(lines[2:4]):
        assert 0.8 < rate < 1.2, res.stdout
    assert abs(int(lines[4]) - time.time()) < 5


def test_offset_and_settime(run_umvu, unprivileged):
    """offset moves the clock; clock_settime as virtual root moves offset;
    a plain user gets EPERM, as from the kernel. Unprivileged: the host's
    clock could not change anyway."""
    res = run_umvu(textwrap.dedent("""\
        vu_insmod vumisc unrealuidgid
        vumount -t vumisctime none /mnt || exit 1
        echo 86400 > /mnt/offset
        cat /mnt/offset
        echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) ))
        date -s @1000000000 >/dev/null 2>&1; echo plain=$?
        vusu -c 'date -s @1000000000 > /dev/null'; echo root=$?
        date +%Y
        """), user=NOBODY)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "86400.000000000"
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    assert abs(int(lines[1]) - boot - 86400) < 30
    assert lines[2:] == ["plain=1", "root=0", "2001"]
    assert time.time() > 1.6e9


def test_monotonic_sleep(run_umvu):
    """-o monotonic: sleep 2 at frequency 2 takes about 1 s, and the
    monotonic clock says 2."""
    res = run_umvu(textwrap.dedent("""\
        set -e
        vu_insmod vumisc
        vumount -t vumisctime -o monotonic none /mnt
        echo 2 > /mnt/frequency
        ua=$(cut -d' ' -f1 /proc/uptime)
        sleep 2
        ub=$(cut -d' ' -f1 /proc/uptime)
        echo "$ua $ub"
        python3 -c 'import time, select
        a = time.monotonic(); time.sleep(1); b = time.monotonic()
        select.select([], [], [], 1); c = time.monotonic()
        print(b - a, c - b)'
        """))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    ua, ub = (float(x) for x in lines[0].split())
    assert 0.6 < ub - ua < 1.8, lines
    slept, selected = (float(x) for x in lines[1].split())
    assert 0.9 < slept < 2.0 and 0.9 < selected < 2.0, lines


TIMERFD_PY = r"""
import ctypes, struct, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.timerfd_create(1, 0)                  # CLOCK_MONOTONIC
spec = struct.pack("qqqq", 0, 0, 2, 0)          # interval 0, value 2 s
a = time.monotonic()
assert libc.timerfd_settime(fd, 0, spec, None) == 0
cur = ctypes.create_string_buffer(32)
libc.timerfd_gettime(fd, cur)
left = struct.unpack("qqqq", cur.raw)
import os
os.read(fd, 8)                                  # blocks until it fires
print(left[2] + left[3] / 1e9, time.monotonic() - a)
"""


def test_monotonic_timerfd(run_umvu, tmp_path):
    """-o monotonic paces timerfd too: 2 s at frequency 2 fire after about
    1 s of real time; timerfd_gettime tells the time left in the view's."""
    (tmp_path / "tfd.py").write_text(TIMERFD_PY)
    res = run_umvu(textwrap.dedent(f"""\
        set -e
        vu_insmod vumisc
        vumount -t vumisctime -o monotonic none /mnt
        echo 2 > /mnt/frequency
        ua=$(cut -d' ' -f1 /proc/uptime)
        python3 {tmp_path}/tfd.py
        ub=$(cut -d' ' -f1 /proc/uptime)
        echo "$ua $ub"
        """))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    left, seen = (float(x) for x in lines[0].split())
    ua, ub = (float(x) for x in lines[1].split())
    assert 1.5 < left <= 2.0, lines             # in the view's seconds
    assert 1.6 < seen < 3.0, lines              # the view's clock
    assert 0.6 < ub - ua < 2.0, lines           # real time


def test_bad_input(run_umvu, user):
    """Bad values fail the shell's write with EINVAL and a clear line; the
    settings keep their values and the view goes on."""
    res = run_umvu(textwrap.dedent("""\
        vu_insmod vumisc
        vumount -t vumisctime none /mnt || exit 1
        echo 2 > /mnt/frequency
        echo abc > /mnt/frequency; echo rc=$?
        echo -1 > /mnt/frequency; echo rc=$?
        echo soon > /mnt/offset; echo rc=$?
        echo x > /mnt/other; echo rc=$?
        cat /mnt/frequency /mnt/offset
        vumount -t vumisctime -o fast none /tmp/t2; echo rc=$?
        vumount -t vumiscfoo none /tmp/t3; echo rc=$?
        date +%s > /dev/null && echo alive
        """), user=user)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["rc=1"] * 4 + [
        "2", "0.000000000", "rc=1", "rc=1", "alive"]
    err = res.stderr
    assert "frequency: 'abc' is not a number" in err
    assert "frequency: -1 is negative" in err
    assert "echo: write error: Invalid argument" in err
    assert "offset: 'soon' is not a number of seconds" in err
    assert "unknown option 'fast'" in err
    assert "unknown type 'vumiscfoo'" in err


def test_uname_inside_and_outside(run_umvu, user):
    host = os.uname()
    res = run_umvu(textwrap.dedent("""\
        set -e
        vu_insmod vumisc unrealuidgid
        vumount -t vumiscuname none /etc/vuname
        ls /etc/vuname
        echo mybox > /etc/vuname/nodename
        echo 9.9.9-vu > /etc/vuname/release
        hostname; uname -r; uname -n
        cat /proc/sys/kernel/osrelease /proc/sys/kernel/hostname /proc/sys/kernel/ostype
        hostname plain 2>/dev/null || echo plain-refused
        vusu -c 'hostname rooted; domainname example.org'
        hostname; domainname; cat /etc/vuname/nodename /proc/sys/kernel/domainname
        cat /proc/sys/kernel/pid_max > /dev/null
        uname -a
        """), user=user)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:6] == ["domainname", "machine", "nodename", "release", "sysname", "version"]
    assert lines[6:12] == ["mybox", "9.9.9-vu", "mybox", "9.9.9-vu", "mybox", "Linux"]
    rest = lines[12:]
    if user == NOBODY:
        assert rest[0] == "plain-refused"
        rest = rest[1:]
    assert rest[:4] == ["rooted", "example.org", "rooted", "example.org"]
    assert rest[4] == f"Linux rooted 9.9.9-vu {host.version} {host.machine} GNU/Linux"
    # outside: unchanged
    assert os.uname() == host
    assert open("/proc/sys/kernel/osrelease").read().strip() == host.release
