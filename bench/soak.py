#!/usr/bin/env python3
"""Soak: many processes and threads doing file I/O in a cow mount.

    .venv/bin/python bench/soak.py [--seconds 60] [--procs 200] [--threads 64]

A view with a vufs cow mount runs PROCS shell loops (create, append, read,
rename, delete, stat, list) and one Python process with THREADS threads
doing the same, for SECONDS. The hypervisor's descriptor count and RSS
are sampled after the first 5 s and at the end: a leak shows as growth.
Exit status 1 if either grew beyond a small allowance, or the view failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

WORKER_SH = r"""
i=0
while [ ! -e "$STOP" ]; do
    f="$D/w$1-$i"
    echo "line $i" > "$f"; echo more >> "$f"; cat "$f" > /dev/null
    mv "$f" "$f.r"; stat "$f.r" > /dev/null; ls "$D" > /dev/null
    [ -e "$L/lower-$(( i % 20 ))" ] && cat "$L/lower-$(( i % 20 ))" > /dev/null
    rm -f "$f.r"; i=$((i + 1))
done
"""

THREADS_PY = r"""
import os, sys, threading
d, stop, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def work(k):
    i = 0
    while not os.path.exists(stop):
        p = f"{d}/t{k}-{i % 8}"
        with open(p, "w") as f:
            f.write("x" * 100)
        with open(p) as f:
            f.read()
        os.stat(p); os.listdir(d); os.unlink(p)
        i += 1
ts = [threading.Thread(target=work, args=(k,)) for k in range(n)]
for t in ts: t.start()
for t in ts: t.join()
"""


def sample(pid: int) -> tuple[int, int]:
    """(open descriptors, RSS in kB) of the hypervisor."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--procs", type=int, default=200)
    p.add_argument("--threads", type=int, default=64)
    args = p.parse_args()
    top = Path(tempfile.mkdtemp(prefix="umvu-soak-"))
    try:
        lower, cow = top / "lower", top / "cow"
        lower.mkdir()
        cow.mkdir()
        for i in range(20):
            (lower / f"lower-{i}").write_text(f"lower {i}\n" * 10)
        (top / "worker.sh").write_text(WORKER_SH)
        (top / "threads.py").write_text(THREADS_PY)
        stop = top / "stop"
        script = f"""
            vu_insmod vufs || exit 90
            vumount -t vufs -o cow {cow} {lower} || exit 91
            export D={lower} L={lower} STOP={stop}
            for n in $(seq {args.procs}); do sh {top}/worker.sh $n & done
            python3 {top}/threads.py {lower} {stop} {args.threads} &
            wait
            ls {lower} | wc -l
        """
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
        view = subprocess.Popen([str(VENV_BIN / "umvu"), "-N", "--", "bash", "-c", script],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(5)
        first = sample(view.pid)
        time.sleep(max(0.0, args.seconds - 5))
        last = sample(view.pid)
        stop.touch()
        out, err = view.communicate(timeout=120)
        print(f"after 5 s: {first[0]} descriptors, {first[1]} kB RSS")
        print(f"at {args.seconds:g} s: {last[0]} descriptors, {last[1]} kB RSS")
        print(f"view exit status {view.returncode}; {out.strip()} names left in the view")
        grew = last[0] > first[0] + 8 or last[1] > first[1] * 1.2 + 4096
        if err.strip():
            print("stderr:", err.strip()[-2000:], file=sys.stderr)
        if lower.joinpath("lower-0").read_text() != "lower 0\n" * 10:
            print("the lower layer changed!", file=sys.stderr)
            return 1
        return 1 if grew or view.returncode != 0 else 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
