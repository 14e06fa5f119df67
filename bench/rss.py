"""The tracer's memory with many processes in the view.

Under a variant, `sh` starts N `sleep SECS &`, waits for them to start,
then (umvu only) reads VmRSS/VmHWM of the hypervisor from inside the view
via /proc/$UMVU_PID/status, before the sleeps end. From outside, the runner
reads the same fields of the tracer process (umvu's or proot's pid is the
one it started) and counts the `sleep` processes below it, and how many of
them it traces (a umvu view with no module traces none: it needs not), to
check the N processes really were in the view at the time.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

SCRIPT = r"""
vm() { grep -E '^(VmRSS|VmHWM):' /proc/$1/status | tr -s ' \t' ' ' | tr '\n' ' '; }
[ -n "$UMVU_PID" ] && echo "pid $UMVU_PID" && echo "before $(vm $UMVU_PID)"
i=0
while [ $i -lt %(n)d ]; do sleep %(secs)d & i=$((i+1)); done
sleep %(settle)s
[ -n "$UMVU_PID" ] && echo "after $(vm $UMVU_PID)"
echo ready
wait
echo done
"""

_FIELD = re.compile(r"(VmRSS|VmHWM):\s*(\d+) kB")


def _fields(text: str) -> dict:
    return {k: int(v) for k, v in _FIELD.findall(text)}


def _status(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return ""


def _sleeps(tracer: int) -> tuple[int, int]:
    """(sleep processes below tracer, those of them it traces)."""
    status = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            status[int(name)] = _status(int(name))
    ppid = {pid: int(m.group(1)) for pid, st in status.items()
            if (m := re.search(r"^PPid:\s*(\d+)$", st, re.M))}

    def below(pid):
        while pid > 1:
            pid = ppid.get(pid, 0)
            if pid == tracer:
                return True
        return False
    sleeps = [st for pid, st in status.items()
              if re.search(r"^Name:\s*sleep$", st, re.M) and below(pid)]
    traced = [st for st in sleeps
              if re.search(rf"^TracerPid:\s*{tracer}$", st, re.M)]
    return len(sleeps), len(traced)


def measure(argv_fn, n: int, secs: int, env: dict, timeout: float = 120) -> dict:
    settle = max(1, secs // 2 - 0.5)
    script = SCRIPT % {"n": n, "secs": secs, "settle": settle}
    argv = argv_fn(script)
    res = {"processes": n, "argv": argv}
    errf = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=errf,
                         text=True, start_new_session=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("ready"):
                res["outside"] = _fields(_status(p.pid))
                res["sleeps"], res["traced_sleeps"] = _sleeps(p.pid)
            if time.perf_counter() - t0 > timeout:
                raise subprocess.TimeoutExpired(argv, timeout)
        p.wait(timeout=max(1, timeout - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
        res["error"] = "timeout"
    res["seconds"] = time.perf_counter() - t0
    errf.seek(0)
    res["stderr"] = errf.read()[-2000:].decode(errors="replace")
    errf.close()
    res["rc"] = p.returncode
    res["stdout"] = lines
    for line in lines:
        word, _, rest = line.partition(" ")
        if word in ("before", "after"):
            res[word] = _fields(rest)
        elif word == "pid":
            res["umvu_pid"] = int(rest)
    if "umvu_pid" in res and res["umvu_pid"] != p.pid:
        res.setdefault("error", f"$UMVU_PID {res['umvu_pid']} is not the "
                                f"started process {p.pid}")
    if p.returncode != 0:
        res.setdefault("error", f"exit status {p.returncode}")
    elif "done" not in lines:
        res.setdefault("error", "script did not finish")
    elif res.get("sleeps", 0) < n:
        res.setdefault("error", f"only {res.get('sleeps', 0)} of {n} "
                                "sleeps seen in the view")
    return res
