#!/usr/bin/env python3
"""umvu benchmark suite.

    .venv/bin/python bench/run.py [--proot PATH] [--runs N] [--quick]
                                  [--only NAME...] [--variants NAME...]

Runs every workload (workloads.py) under every variant (variants.py):
native; umvu alone, with unrealuidgid, with vufs mounted where nothing
looks, bound over the directory the workload reads, copy-on-write over it;
proot, proot with an unused bind mount and with one in use. A vufuse
section reads an ext4 image through umvu's vufuse, the kernel's FUSE
(fuse2fs, as root) and the kernel's ext4 on a loop device (as root).

Every run is timed *inside* the view, inside proot and natively the same
way, by a small C timer (timer.c, compiled at run time) started after the
variant's set-up: the ratios compare the workloads' own cost, not the
hypervisor's start-up, which is its own row (`umvu true`, whole command,
against native `true`). The whole command's time is kept in the JSON.

For each workload: one untimed warm-up run per variant (its output checked
against the reference's, native's), then N repetitions, each running every
variant once in turn (A B C A B C ...); the median time per variant is
reported. Also measures the hypervisor's memory with 100 processes in the
view (rss.py). umvu runs from a copy of the code taken at the start
(snapshot.py), so edits to the tree during a run do not mix versions;
--no-snapshot disables.

Prints the tables, and writes bench/results/<time>.json (and latest.json);
a full run (no --quick/--only/--variants) also writes docs/performance.csv
and docs/performance.png.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import rss                                  # noqa: E402
import snapshot                             # noqa: E402
import variants as variants_mod             # noqa: E402
from variants import VARIANTS, SetupError, Tools   # noqa: E402
from workloads import WORKLOADS, WORKLOAD_GROUPS, Context   # noqa: E402

RESULTS = HERE / "results"
DOCS = ROOT / "docs"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running

@dataclasses.dataclass
class Run:
    seconds: float          # the whole command, as seen from here
    rc: int | None          # None: killed after the timeout
    stdout: str
    stderr: str
    cpu_user: float
    cpu_sys: float
    inner: float | None = None      # the timer's: the workload alone
    inner_user: float | None = None
    inner_sys: float | None = None


TIMER_LINE = re.compile(r"^umvu-bench-timer: (\S+) (\S+) (\S+)\n?", re.M)


def run_once(argv, cwd, env, timeout) -> Run:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = Run(t1 - t0, rc, out.decode(errors="replace"),
              err.decode(errors="replace"),
              r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
    found = list(TIMER_LINE.finditer(run.stderr))
    if found:
        m = found[-1]
        run.inner, run.inner_user, run.inner_sys = map(float, m.groups())
        run.stderr = run.stderr[:m.start()] + run.stderr[m.end():]
    return run


def bench_env() -> dict:
    """The workloads' environment: the system PATH (not the venv's nor
    pyenv's python3), no Python or umvu variables inherited from the caller.
    PYTHONDONTWRITEBYTECODE is dropped so umvu gets its .pyc files, as it
    would for a user."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "UMVU_", "VIRTUAL_ENV"))}
    env["PATH"] = SYSTEM_PATH
    env["LC_ALL"] = "C"
    return env


#: (snapshot launcher directory, the venv's): repro commands name the venv's
REPRO_BIN = ("", "")


class Failures(list):
    def add(self, workload, variant, phase, what, argv, cwd, run=None):
        repro = (f"cd {shlex.quote(cwd)} && " if cwd else "") + shlex.join(argv)
        if REPRO_BIN[0]:
            repro = repro.replace(REPRO_BIN[0], REPRO_BIN[1])
        item = {"workload": workload, "variant": variant, "phase": phase,
                "what": what, "repro": repro}
        if run is not None:
            item["rc"] = run.rc
            item["stderr"] = run.stderr[-1500:]
            item["stdout"] = run.stdout[-500:]
        self.append(item)
        log(f"  !! {workload}/{variant} {phase}: {what}")


def describe_failure(run: Run, expect_out: str | None, timed: bool,
                     umvu_setup: bool) -> str | None:
    if run.rc is None:
        return f"timed out after {run.seconds:.0f}s (killed)"
    if run.rc == 125 and umvu_setup:
        return "set-up in the view failed (exit status 125)"
    if run.rc != 0:
        return f"exit status {run.rc}"
    if timed and run.inner is None:
        return "no time from the timer (its line is missing from stderr)"
    if expect_out is not None and run.stdout != expect_out:
        return (f"output differs from the reference's: {run.stdout[:200]!r} "
                f"instead of {expect_out[:200]!r}")
    return None


def variants_for(w, variants):
    return [v for v in variants if w.group in v.groups
            and (w.kinds is None or v.kind in w.kinds)]


def invoke(v, w, cmd, timed, env, timeout):
    """One run of `cmd` under `v`, with the variant's set-up and tear-down
    around it (outside the timer). Returns (Run or None, error or None)."""
    params = variants_mod.params_for(w.params)
    if v.setup:
        try:
            v.setup(params)
        except SetupError as exc:
            return None, f"set-up failed: {exc}"
    try:
        r = run_once(v.argv(cmd, timed=timed, params=w.params), w.cwd, env,
                     timeout)
    except BaseException:
        if v.teardown:
            with contextlib.suppress(SetupError):
                v.teardown(params)
        raise
    if v.teardown:
        try:
            v.teardown(params)
        except SetupError as exc:
            return None, f"tear-down failed: {exc}"
    return r, None


def bench_workload(w, variants, runs, env, timeout, failures, skipped):
    """Warm-up, then `runs` interleaved repetitions. Returns per-variant
    lists of successful times (in-view, or whole command for a "wall"
    workload), of whole-command times, and of all Run records (as dicts)."""
    vs = []
    for v in variants_for(w, variants):
        if v.setup:             # probe the root-only set-ups once
            params = variants_mod.params_for(w.params)
            try:
                v.setup(params)
                v.teardown(params)
            except SetupError as exc:
                why = str(exc)
                log(f"  {v.name}: cannot be set up here, not run: {why}")
                skipped.append({"workload": w.name, "variant": v.name,
                                "why": why})
                continue
        vs.append(v)
    ref_name = next((n for n in w.reference if any(v.name == n for v in vs)),
                    None)
    # the reference first: the others' output is compared with its output
    vs.sort(key=lambda v: v.name != ref_name)
    timed = w.timing == "inner"
    times = {v.name: [] for v in vs}
    walls = {v.name: [] for v in vs}
    records = {v.name: [] for v in vs}

    def one(v, cmd, is_timed, ref_out, phase):
        # the repro command: without the timer (a file in the scratch dir)
        argv = v.argv(cmd, timed=False, params=w.params)
        r, err = invoke(v, w, cmd, is_timed, env, timeout)
        if r is None:
            failures.add(w.name, v.name, phase, err, argv, w.cwd)
            return None, err
        if v.noise:
            r.stdout = "".join(line for line in r.stdout.splitlines(True)
                               if line.rstrip("\n") not in v.noise)
        what = describe_failure(r, None if v.name == ref_name else ref_out,
                                is_timed, v.kind == "umvu")
        if what:
            failures.add(w.name, v.name, phase, what, argv, w.cwd, r)
        return r, what

    # warm-up: caches, .pyc files; the check command's output is compared
    check = w.check or w.cmd
    ref = None
    for v in vs:
        r, what = one(v, check, False, ref, "check (warm-up)")
        if v.name == ref_name and r is not None and what is None:
            ref = r.stdout

    ref = None
    for i in range(runs):
        line = []
        for v in vs:
            r, what = one(v, w.cmd, timed, ref, f"run {i + 1}")
            if v.name == ref_name and ref is None and r is not None \
                    and what is None:
                ref = r.stdout
            rec = {"ok": what is None, "error": what}
            if r is not None:
                rec.update({
                    "seconds": r.inner if timed else r.seconds,
                    "inner": r.inner, "wall": r.seconds, "rc": r.rc,
                    "cpu_user": r.inner_user if timed else r.cpu_user,
                    "cpu_sys": r.inner_sys if timed else r.cpu_sys,
                    "wall_cpu_user": r.cpu_user, "wall_cpu_sys": r.cpu_sys})
            records[v.name].append(rec)
            if what:
                line.append(f"{v.name} FAIL")
            else:
                times[v.name].append(rec["seconds"])
                walls[v.name].append(r.seconds)
                line.append(f"{v.name} {rec['seconds']:.3f}")
        log(f"  {w.name} [{i + 1}/{runs}] " + "  ".join(line))
    return times, walls, records


# ---------------------------------------------------------------- numbers

MiB = 1 << 20


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def _median(xs):
    return statistics.median(xs) if xs else None


def _ratio_spread(ts, refs):
    """Half the min-max spread of the per-repetition ratios (the runs are
    interleaved: repetition i of a variant and of its reference ran side by
    side), as a fraction of their median; None without two pairs."""
    ratios = [t / r for t, r in zip(ts, refs) if t and r]
    if len(ratios) < 2:
        return None
    med = statistics.median(ratios)
    return (max(ratios) - min(ratios)) / 2 / med if med else None


def summarize(workloads, variants, times, walls):
    """medians and ratios: {workload: {variant: {...}}}. `ratio_native` is
    to the workload's reference (native; the kernel's ext4 for vufuse)."""
    byname = {v.name: v for v in variants}
    table = {}
    for w in workloads:
        row = {}
        for vname, ts in times[w.name].items():
            row[vname] = {"median": _median(ts),
                          "min": min(ts) if ts else None,
                          "max": max(ts) if ts else None, "ok_runs": len(ts),
                          "timing": w.timing,
                          "wall_median": _median(walls[w.name][vname])}
        ref = next((n for n in w.reference
                    if row.get(n, {}).get("median")), None)
        refm = row[ref]["median"] if ref else None
        refw = row[ref]["wall_median"] if ref else None
        for vname, cell in row.items():
            m, wm = cell["median"], cell["wall_median"]
            cell["reference"] = ref
            cell["ratio_native"] = m / refm if m and refm else None
            cell["ratio_native_spread"] = _ratio_spread(
                times[w.name][vname], times[w.name].get(ref, []))
            cell["wall_ratio_native"] = wm / refw if wm and refw else None
            peer = byname[vname].peer
            pm = row.get(peer, {}).get("median") if peer else None
            cell["peer"] = peer if peer in row else None
            cell["ratio_peer"] = m / pm if m and pm else None
            cell["ratio_peer_spread"] = _ratio_spread(
                times[w.name][vname], times[w.name].get(peer, [])) if peer else None
            if w.bytes:
                cell["MiBps"] = w.bytes / MiB / m if m else None
                cell["throughput_ratio"] = refm / m if m and refm else None
        table[w.name] = row
    return table


GEOMEAN_GROUPS = ("main", "vufuse")


def geomeans(workloads, variants, table, runs_expected):
    """Geometric mean per variant and group ("main", "vufuse") over the
    group's workloads that every variant of the group ran completely (so
    the variants' means are over the same set)."""
    out = {}
    for group in GEOMEAN_GROUPS:
        ws = [w.name for w in workloads if w.group == group]
        vs = [v for v in variants if any(v.name in table[w] for w in ws)]
        common = [w for w in ws
                  if all(table[w].get(v.name, {}).get("ok_runs") == runs_expected
                         for v in vs)]
        by = {}
        for v in vs:
            peer = next((table[w][v.name]["peer"] for w in common
                         if table[w][v.name]["peer"]), None)
            by[v.name] = {
                "ratio_native": geomean([table[w][v.name]["ratio_native"]
                                         for w in common]),
                "ratio_peer": geomean([table[w][v.name]["ratio_peer"]
                                       for w in common]) if peer else None,
                "wall_ratio_native": geomean(
                    [table[w][v.name]["wall_ratio_native"] for w in common]),
                "peer": peer}
        out[group] = {"over": common, "variants": by}
    return out


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds: the machine is shared."""

    def __init__(self, every=5.0):
        super().__init__(daemon=True)
        self.every = every
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self.stop.wait(self.every):
                return

    def summary(self):
        s = self.samples or [os.getloadavg()[0]]
        return {"samples": len(s), "every_s": self.every, "min": min(s),
                "max": max(s), "mean": round(sum(s) / len(s), 2),
                "median": statistics.median(s)}


# ---------------------------------------------------------------- output

KIND_ORDER = {"native": 0, "kernel": 1, "umvu": 2, "proot": 3}


def display_order(variants):
    """native first, then umvu's variants, then proot's (stable)."""
    return sorted(variants, key=lambda v: KIND_ORDER.get(v.kind, 9))


def fmt_s(cell):
    if not cell or cell["median"] is None:
        return "FAIL" if cell else "-"
    m = cell["median"]
    spread = (cell["max"] - cell["min"]) / m * 100 if m else 0
    s = f"{m:.4f}" if m < 0.1 else f"{m:.3f}" if m < 100 else f"{m:.1f}"
    return f"{s} ±{spread / 2:.0f}%"


def fmt_r(x):
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def fmt_rs(cell, key):
    """A ratio with its spread: "0.45x ±12%"."""
    if not cell or cell.get(key) is None:
        return "-"
    spread = cell.get(key + "_spread")
    return fmt_r(cell[key]) + (f" ±{spread * 100:.0f}%" if spread is not None else "")


def fmt_n(x, digits=0):
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(title, header, rows, out):
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    print(f"\n{title}", file=out)
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(header))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in rows:
        print("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                        for i, c in enumerate(r)), file=out)


def _ran(ws, variants, table):
    return [v for v in display_order(variants)
            if any(v.name in table[w.name] for w in ws)]


def report(workloads, variants, table, gm, mem, meta, out=sys.stdout):
    get = lambda w, v, k: table[w.name].get(v.name, {}).get(k)  # noqa: E731

    # ---- main: times, ratios to native, to the proot peer
    main = [w for w in workloads if w.group == "main"]
    if main:
        vs = _ran(main, variants, table)
        print("\nWorkloads (timed inside the view, after the variant's set-up):",
              file=out)
        for w in main:
            print(f"  {w.name:<9} {w.title}", file=out)
        rows = [[w.name] + [fmt_s(table[w.name].get(v.name)) for v in vs]
                for w in main]
        print_table("Median seconds inside the view (± half the min-max "
                    "spread)", ["workload"] + [v.name for v in vs], rows, out)
        g = gm["main"]["variants"]
        rel = [v for v in vs if v.kind != "native"]
        rows = [[w.name] + [fmt_rs(table[w.name].get(v.name), "ratio_native")
                            for v in rel] for w in main]
        rows.append(["geomean*"] + [fmt_r(g.get(v.name, {}).get("ratio_native"))
                                    for v in rel])
        rows.append(["(whole)**"] + [fmt_r(g.get(v.name, {}).get(
            "wall_ratio_native")) for v in rel])
        print_table("Ratio to native, inside the view (lower is better)",
                    ["workload"] + [v.name for v in rel], rows, out)
        peered = [v for v in vs if v.peer and any(get(w, v, "peer") for w in main)]
        if peered:
            rows = [[w.name] + [fmt_rs(table[w.name].get(v.name), "ratio_peer")
                                for v in peered] for w in main]
            rows.append(["geomean*"] + [fmt_r(g.get(v.name, {}).get("ratio_peer"))
                                        for v in peered])
            print_table("Ratio to its proot peer (below 1: faster than proot)",
                        ["workload"] + [f"{v.name}/{v.peer}" for v in peered],
                        rows, out)
            notes = [f"{v.name}: {v.note}" for v in peered if v.note]
            if notes:
                print("  " + "; ".join(notes), file=out)
        print(f"\n*  geometric mean over the workloads all variants ran: "
              f"{', '.join(gm['main']['over']) or 'none'}", file=out)
        print("** the same, from whole-command times (start-up and set-up "
              "included; JSON: wall_median)", file=out)

    # ---- sequential read throughput
    for w in (w for w in workloads if w.group == "seqread"):
        vs = _ran([w], variants, table)
        rows = [[v.name, fmt_s(table[w.name][v.name]),
                 fmt_n(get(w, v, "MiBps")), fmt_r(get(w, v, "throughput_ratio"))]
                for v in vs]
        print_table(f"Sequential read: {w.title} (page cache); the vufs "
                    f"mounts cover the file's directory",
                    ["variant", "median s", "MiB/s", "throughput vs native"],
                    rows, out)

    # ---- start-up
    for w in (w for w in workloads if w.group == "startup"):
        vs = _ran([w], variants, table)
        rows = [[v.name, fmt_s(table[w.name][v.name]),
                 fmt_n((get(w, v, "median") or 0) * 1000, 1)
                 if get(w, v, "median") else "-",
                 fmt_r(get(w, v, "ratio_native"))] for v in vs]
        print_table(f"Start-up: {w.title} (the hypervisor's start and exit, "
                    f"with the variant's set-up)", ["variant", "median s", "ms",
                                                   "vs native"], rows, out)

    # ---- vufuse
    vf = [w for w in workloads if w.group == "vufuse"]
    if vf:
        vs = _ran(vf, variants, table)
        print("\nvufuse: an ext4 image (squashfs-ls: a squashfs image), mounted "
              "afresh for every run (outside the timer; the image file itself "
              "in the page cache); kernel-ext4 is the kernel's own file system "
              "(squashfs for squashfs-ls), kernel-fuse the same FUSE program "
              "(fuse2fs, squashfuse) through the kernel's FUSE", file=out)
        for w in vf:
            print(f"  {w.name:<12} {w.title}", file=out)
        rows = [[w.name] + [fmt_s(table[w.name].get(v.name)) for v in vs]
                for w in vf]
        print_table("Median seconds", ["workload"] + [v.name for v in vs],
                    rows, out)
        ref = next((table[w.name][v]["reference"] for w in vf
                    for v in table[w.name]), None)
        rel = [v for v in vs if v.name != ref]
        peered = [v for v in rel if v.peer and any(get(w, v, "peer") for w in vf)]
        g = gm["vufuse"]["variants"]
        rows = [[w.name] + [fmt_rs(table[w.name].get(v.name), "ratio_native")
                            for v in rel]
                + [fmt_rs(table[w.name].get(v.name), "ratio_peer") for v in peered]
                for w in vf]
        rows.append(["geomean"] + [fmt_r(g.get(v.name, {}).get("ratio_native"))
                                   for v in rel]
                    + [fmt_r(g.get(v.name, {}).get("ratio_peer")) for v in peered])
        print_table(f"Ratio to {ref or 'the reference'} (lower is better)",
                    ["workload"] + [v.name for v in rel]
                    + [f"{v.name}/{v.peer}" for v in peered], rows, out)
        for w in (w for w in vf if w.bytes):
            print(f"  {w.name} MiB/s: " + ", ".join(
                f"{v.name} {fmt_n(get(w, v, 'MiBps'))}" for v in vs
                if get(w, v, "MiBps")), file=out)

    if meta.get("not_run"):
        print("\nNot run here:", file=out)
        for s in meta["not_run"]:
            print(f"  {s['variant']}" + (f" ({s['workload']})" if s.get("workload")
                                         else "") + f": {s['why']}", file=out)

    if mem:
        print("\nTracer memory, kB (VmRSS / VmHWM):", file=out)
        for vname, m in mem.items():
            print("  " + mem_line(vname, m), file=out)

    ld = meta.get("load", {})
    if ld:
        print(f"\nLoad average (1 min) during the run, sampled every "
              f"{ld['every_s']:.0f}s: min {ld['min']}, median {ld['median']}, "
              f"max {ld['max']} (start {meta['loadavg_start'][0]:.2f}, end "
              f"{meta['loadavg_end'][0]:.2f}; {meta['nproc']} CPUs)", file=out)


def mem_line(vname, m):
    def pair(d):
        return f"{d.get('VmRSS', '?')} / {d.get('VmHWM', '?')}" if d else "-"
    s = (f"{vname:<20} {m['processes']} procs: outside {pair(m.get('outside'))}"
         f"  (sleeps in the view: {m.get('sleeps', '?')}, traced: {m.get('traced_sleeps', '?')})")
    if "after" in m:
        s += (f"; inside via $UMVU_PID: idle {pair(m.get('before'))}, "
              f"{m['processes']} procs {pair(m.get('after'))}")
    if m.get("error"):
        s += f"  !! {m['error']}"
    return s


CSV_COLS = ["workload", "description", "variant", "kind", "unit", "ok_runs",
            "median", "min", "max", "ratio_native", "peer", "ratio_peer",
            "group", "timing", "reference", "wall_median", "wall_ratio_native",
            "MiBps", "throughput_ratio"]


def write_csv(path, workloads, variants, table, gm, mem):
    """One row per workload and variant: `median` is the in-view time
    (timing "inner") or the whole command's ("wall", start-up);
    `ratio_native` is to `reference` (native; kernel-ext4 for vufuse)."""
    kinds = {v.name: v.kind for v in variants}

    def num(x, digits=4):
        return "" if x is None else round(x, digits)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(CSV_COLS)
        for w in workloads:
            for v in display_order(variants):
                c = table[w.name].get(v.name)
                if c is None:
                    continue
                wr.writerow([w.name, w.title, v.name, v.kind, "s", c["ok_runs"],
                             num(c["median"]), num(c["min"]), num(c["max"]),
                             num(c["ratio_native"], 3), c["peer"] or "",
                             num(c["ratio_peer"], 3), w.group, w.timing,
                             c["reference"] or "", num(c["wall_median"]),
                             num(c["wall_ratio_native"], 3),
                             num(c.get("MiBps"), 1),
                             num(c.get("throughput_ratio"), 3)])
        for group in GEOMEAN_GROUPS:
            over = gm[group]["over"]
            name = "geomean" if group == "main" else f"geomean-{group}"
            for vname, g in gm[group]["variants"].items():
                wr.writerow([name, "geometric mean of the ratios over "
                             + " ".join(over), vname, kinds[vname], "ratio",
                             "", "", "", "", num(g["ratio_native"], 3),
                             g["peer"] or "", num(g["ratio_peer"], 3), group,
                             "inner", "", "", num(g["wall_ratio_native"], 3),
                             "", ""])
        for vname, m in mem.items():
            for where, key in (("outside", "VmRSS"), ("outside", "VmHWM"),
                               ("before", "VmRSS"), ("after", "VmRSS"),
                               ("after", "VmHWM")):
                val = m.get(where, {}).get(key)
                if val is None:
                    continue
                label = {"outside": f"tracer {key}, {m['processes']} processes",
                         "before": f"tracer {key}, idle view ($UMVU_PID)",
                         "after": f"tracer {key}, {m['processes']} processes "
                                  f"($UMVU_PID)"}[where]
                wr.writerow([f"mem-{where}-{key}", label, vname, kinds[vname],
                             "kB", 1, val, val, val, "", "", "", "memory", "",
                             "", "", "", "", ""])


def _bars(ax, ws, rel, table, key, colors):
    width = 0.8 / max(1, len(rel))
    labelled = set()
    for i, w in enumerate(ws):
        present = [(v, table[w.name][v.name][key]) for v in rel
                   if table[w.name].get(v.name, {}).get(key)]
        for j, (v, y) in enumerate(present):
            x = i + (j - (len(present) - 1) / 2) * width
            ax.bar([x], [y], width, color=colors[v.name],
                   label=None if v.name in labelled else v.name)
            labelled.add(v.name)
            ax.annotate(f"{y:.2f}" if y < 2 else f"{y:.1f}" if y < 10
                        else f"{y:.0f}", (x, y), ha="center", va="bottom",
                        fontsize=5.5, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(range(len(ws)))
    ax.set_xticklabels([f"{w.name}\n{w.title}" if len(w.title) < 26 else w.name
                        for w in ws], fontsize=6.5)
    ax.margins(y=0.15)


def write_png(path, workloads, variants, table, mem, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [w for w in workloads if w.group in ("main", "seqread")]
    vf = [w for w in workloads if w.group == "vufuse"]
    rel = [v for v in _ran(main, variants, table) if v.kind != "native"]
    vrel = [v for v in _ran(vf, variants, table)
            if any(table[w.name].get(v.name, {}).get("reference") not in
                   (None, v.name) for w in vf)]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"] + \
        ["#393b79", "#8c6d31", "#843c39", "#7b4173"]
    colors = {v.name: palette[j % len(palette)]
              for j, v in enumerate(display_order(variants))}
    fig, (ax, axf, ax2) = plt.subplots(
        1, 3, figsize=(17, 5.8), gridspec_kw={"width_ratios": [5, 1.3, 1.1]})
    _bars(ax, main, rel, table, "ratio_native", colors)
    ax.set_ylabel("time inside the view / native time (log; lower is better)")
    ax.set_title(f"umvu vs proot, workload timed inside the view: median of "
                 f"{meta['runs']} interleaved runs", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)

    if vf and vrel:
        _bars(axf, vf, vrel, table, "ratio_native", colors)
        ref = next((table[w.name][v]["reference"] for w in vf
                    for v in table[w.name]), "?")
        axf.set_title(f"ext4 image: time / {ref}", fontsize=9)
        axf.legend(fontsize=6.5, loc="upper left")
    else:
        axf.axis("off")

    if mem:
        vn = list(mem)
        vals = [mem[n].get("outside", {}).get("VmRSS", 0) / 1024 for n in vn]
        hwm = [mem[n].get("outside", {}).get("VmHWM", 0) / 1024 for n in vn]
        ax2.bar(range(len(vn)), hwm, 0.6, color="lightgray", label="VmHWM")
        ax2.bar(range(len(vn)), vals, 0.4, color="tab:purple", label="VmRSS")
        for i, v in enumerate(vals):
            ax2.annotate(f"{v:.0f}", (i, v), ha="center", va="bottom",
                         fontsize=6.5, xytext=(0, 2), textcoords="offset points")
        ax2.set_xticks(range(len(vn)))
        ax2.set_xticklabels(vn, rotation=40, ha="right", fontsize=6.5)
        n = next(iter(mem.values()))["processes"]
        ax2.set_title(f"tracer memory, {n} processes (MiB)", fontsize=9)
        ax2.legend(fontsize=6.5)
    else:
        ax2.axis("off")
    st = next((table[w.name] for w in workloads if w.group == "startup"), {})
    start = ", ".join(f"{n} {c['median'] * 1000:.0f} ms" for n, c in st.items()
                      if c.get("median") and n in ("native", "umvu", "proot"))
    ld = meta.get("load", {})
    fig.text(0.01, 0.01, f"{meta['cpu']}, {meta['nproc']} CPUs, Linux "
             f"{meta['kernel']}, {meta['date']}; load average (1 min) "
             f"{ld.get('min', '?')}-{ld.get('max', '?')}"
             + (f"; start-up (`true`, whole command): {start}" if start else ""),
             fontsize=6.5, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- meta

def _cmd_out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def proot_version(proot) -> str:
    if not proot:
        return ""
    text = _cmd_out([proot, "--version"])
    v = re.search(r"\b(\d+\.\d+(?:\.\d+)*)\s*$", text, re.M)
    acc = re.search(r"accelerators:\s*(.*)", text)
    return ("proot " + (v.group(1) if v else "?")
            + (f" ({acc.group(1).strip()})" if acc else ""))


def metadata(args, cpus):
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = _cmd_out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
        "affinity": sorted(cpus) if cpus else "not pinned",
        "python": platform.python_version(), "umvu_git": git,
        "runs": args.runs, "quick": args.quick,
        "loadavg_start": os.getloadavg(),
    }


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="umvu benchmarks: workloads x variants, interleaved, "
                    "medians.", epilog="workloads: " + " ".join(WORKLOADS)
        + " rss; variants: " + " ".join(v.name for v in VARIANTS))
    p.add_argument("--proot", metavar="PATH", help="proot binary (default: "
                   "upstream proot 5.4 in build/proot-build or /tmp/proot-build "
                   "when built there (`make bench` builds it), else proot on "
                   "PATH; without one the proot variants are skipped)")
    p.add_argument("--umvu", metavar="PATH", help="umvu launcher (default: "
                   "the one next to this Python)")
    p.add_argument("--runs", type=int, metavar="N", help="timed runs per "
                   "workload and variant (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="1 run, smaller workloads: checks it works (< 1 min)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   choices=list(WORKLOADS) + ["rss"],
                   help="only these workloads ('rss': the memory test)")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   choices=[v.name for v in VARIANTS], help="only these variants")
    p.add_argument("--cpus", metavar="LIST",
                   help="pin the runner and everything it starts to these "
                        "CPUs, e.g. 0 or 0,1 (default: not pinned)")
    p.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                   help="kill a run after this long (default 600)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the scratch directory (generated repo, C files) "
                        "so failures' repro commands can be run")
    p.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                   help="run umvu from the working tree itself rather than "
                        "from a copy taken at the start (see snapshot.py)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--docs", action="store_true", default=None,
                   help="write docs/performance.{csv,png} even for a partial run")
    g.add_argument("--no-docs", dest="docs", action="store_false",
                   help="do not write docs/performance.{csv,png}")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.docs is None:
        args.docs = not (args.quick or args.only or args.variants)
    return args


def prepare_tools(args, tmp: Path, env: dict, meta: dict) -> None:
    """Fill variants.TOOLS: a frozen copy of umvu (snapshot.py) unless
    --umvu or --no-snapshot; then check that a view starts at all."""
    tools = Tools.find(args.umvu, args.proot)
    meta["umvu_launcher"] = tools.umvu
    if args.snapshot and not args.umvu:
        global REPRO_BIN
        venv_bin = tools.bin
        tools.umvu, tools.bin = snapshot.make(tmp / "umvu-snapshot", tools.bin)
        REPRO_BIN = (tools.bin, venv_bin)
        meta["snapshot"] = snapshot.fingerprint(tmp / "umvu-snapshot" / "lib")
        log(f"bench: running a copy of umvu ({tmp / 'umvu-snapshot'}, "
            f"code {meta['snapshot']})")
    # the timer, compiled here (run as a file of the scratch directory)
    tools.timer = str(tmp / "timer")
    tools.tmp = str(tmp)
    try:
        subprocess.run(["gcc", "-O2", "-o", tools.timer, str(HERE / "timer.c")],
                       check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"bench: cannot compile timer.c: {exc}")
    for f in dataclasses.fields(Tools):
        setattr(variants_mod.TOOLS, f.name, getattr(tools, f.name))
    meta["proot"] = tools.proot
    meta["proot_version"] = proot_version(tools.proot)
    # sanity check; also writes the copy's .pyc files
    argv = [tools.umvu, "-N", "--", "/bin/sh", "-c",
            f"{tools.bin}/vu_insmod unrealuidgid && echo ok"]
    r = run_once(argv, None, env, 60)
    if r.rc != 0 or r.stdout.strip() != "ok":
        raise SystemExit(f"bench: umvu does not work (exit status {r.rc}):\n"
                         f"  {shlex.join(argv)}\n{r.stderr.strip()[-2000:]}")
    argv = [tools.umvu, "-N", "--", tools.timer, "/bin/sh", "-c", "echo ok"]
    r = run_once(argv, None, env, 60)
    if r.rc != 0 or r.inner is None or r.stdout.strip() != "ok":
        raise SystemExit(f"bench: the timer does not work in a view (exit "
                         f"status {r.rc}):\n  {shlex.join(argv)}\n"
                         f"{r.stderr.strip()[-2000:]}")


def main(argv=None) -> int:
    args = parse_args(argv)
    cpus = None
    if args.cpus:
        cpus = {int(c) for c in args.cpus.split(",")}
        os.sched_setaffinity(0, cpus)
    env = bench_env()
    meta = metadata(args, cpus)
    meta["argv"] = [sys.executable, *sys.argv]
    live = ROOT / "umvu", ROOT / "modules", ROOT / "csrc"

    def live_fp():
        return "".join(snapshot.fingerprint(d) for d in live if d.is_dir())[:24]
    live_start = live_fp()

    failures = Failures()
    times, walls, records, workloads, load = {}, {}, {}, [], {}
    not_run = []
    mem = {}
    sampler = LoadSampler()
    sampler.start()
    t_start = time.perf_counter()
    scratch = (contextlib.nullcontext(tempfile.mkdtemp(prefix="umvu-bench-"))
               if args.keep_tmp else
               tempfile.TemporaryDirectory(prefix="umvu-bench-"))
    with scratch as tmp:
        if args.keep_tmp:
            log(f"bench: scratch directory {tmp} (kept)")
        prepare_tools(args, Path(tmp), env, meta)
        variants = []
        for v in VARIANTS:
            if args.variants and v.name not in args.variants:
                continue
            why = v.missing()
            if why:
                log(f"bench: not running {v.name}: {why}")
                not_run.append({"variant": v.name, "why": why})
            else:
                variants.append(v)
        meta["variants"] = {v.name: {"kind": v.kind, "peer": v.peer,
                                     "groups": sorted(v.groups),
                                     "example_argv": v.argv("CMD"),
                                     "example_timed_argv": v.argv("CMD", timed=True)}
                            for v in variants}
        log(f"bench: {len(variants)} variants, {args.runs} run(s) each, "
            f"umvu {meta['umvu_git']}, {meta['proot_version'] or 'no proot'}")

        ctx = Context(Path(tmp), args.quick)
        for name, build in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            group = WORKLOAD_GROUPS.get(name, "main")
            if not any(group in v.groups for v in variants):
                continue        # e.g. --variants kernel-fuse: no main workload
            w = build(ctx)
            workloads.append(w)
            log(f"[{name}] {w.title}")
            l0 = os.getloadavg()[0]
            times[name], walls[name], records[name] = bench_workload(
                w, variants, args.runs, env, args.timeout, failures, not_run)
            load[name] = (l0, os.getloadavg()[0])

        if not args.only or "rss" in args.only:
            n, secs = (20, 3) if args.quick else (100, 5)
            for v in display_order(variants):
                if v.kind not in ("umvu", "proot") or "main" not in v.groups:
                    continue
                log(f"[rss] {v.name}: {n} x sleep {secs}")
                m = rss.measure(v.argv, n, secs, env)
                mem[v.name] = m
                log("  " + mem_line(v.name, m))
                if m.get("error"):
                    failures.add("rss", v.name, "memory", m["error"], m["argv"],
                                 None)

    sampler.stop.set()
    table = summarize(workloads, variants, times, walls)
    gm = geomeans(workloads, variants, table, args.runs)
    changed = live_fp() != live_start
    meta["live_tree_changed"] = changed
    meta["umvu_git_end"] = _cmd_out(["git", "-C", str(ROOT), "describe",
                                     "--always", "--dirty"])
    meta["loadavg_end"] = os.getloadavg()
    meta["load"] = sampler.summary()
    meta["not_run"] = not_run
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)

    report(workloads, variants, table, gm, mem, meta)
    if changed:
        print("\nNote: umvu's working tree changed during the run; "
              + (f"the results are for the copy taken at the start "
                 f"(git {meta['umvu_git']})." if meta.get("snapshot") else
                 "with --no-snapshot the results may mix versions."))
    if failures:
        print(f"\n{len(failures)} failure(s)"
              + ("" if args.keep_tmp else " (repro commands name files of the "
                 "scratch directory: rerun with --keep-tmp to keep it)") + ":")
        for f in failures:
            print(f"  {f['workload']}/{f['variant']} {f['phase']}: {f['what']}\n"
                  f"    repro: {f['repro']}")
            if f.get("stderr"):
                print("    stderr: " + f["stderr"].strip()[-300:].replace(
                    "\n", "\n            "))

    RESULTS.mkdir(exist_ok=True)
    data = {"meta": meta,
            "workloads": {w.name: {**dataclasses.asdict(w),
                                   "kinds": sorted(w.kinds) if w.kinds else None,
                                   "loadavg": load[w.name]} for w in workloads},
            "runs": records, "summary": table,
            "geomean": gm["main"]["variants"], "geomean_over": gm["main"]["over"],
            "geomean_groups": gm, "load_samples": sampler.samples,
            "memory": mem, "failures": failures}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    for path in (out, RESULTS / "latest.json"):
        with open(path, "w") as f:
            json.dump(data, f, indent=1, default=str)
    log(f"\nbench: results in {out} ({meta['elapsed_s']}s)")
    if args.docs:
        DOCS.mkdir(exist_ok=True)
        write_csv(DOCS / "performance.csv", workloads, variants, table, gm, mem)
        try:
            write_png(DOCS / "performance.png", workloads, variants, table,
                      mem, meta)
        except ImportError:
            log("bench: matplotlib missing (.venv/bin/pip install matplotlib):"
                " no chart")
        log(f"bench: wrote {DOCS / 'performance.csv'} and performance.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
