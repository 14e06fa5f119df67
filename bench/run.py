#!/usr/bin/env python3
"""umvu benchmark suite.

    .venv/bin/python bench/run.py [--proot PATH] [--runs N] [--quick]
                                  [--only NAME...] [--variants NAME...]

Runs every workload (workloads.py) under every variant (variants.py):
native, umvu, umvu with a module loaded, proot, proot with a bind mount.
For each workload: one untimed warm-up run per variant (its output checked
against native's), then N repetitions, each running every variant once in
turn (A B C A B C ...); the median wall-clock time per variant is reported.
Also measures the hypervisor's memory with 100 processes in the view (rss.py).

Prints the tables, and writes bench/results/<time>.json (and latest.json);
a full run (no --quick/--only/--variants) also writes docs/performance.csv
and docs/performance.png.
"""

from __future__ import annotations

import argparse
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import rss                                  # noqa: E402
import variants as variants_mod             # noqa: E402
from variants import VARIANTS, Tools        # noqa: E402
from workloads import WORKLOADS, Context    # noqa: E402

RESULTS = HERE / "results"
DOCS = ROOT / "docs"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running

@dataclasses.dataclass
class Run:
    seconds: float
    rc: int | None          # None: killed after the timeout
    stdout: str
    stderr: str
    cpu_user: float
    cpu_sys: float


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
    return Run(t1 - t0, rc, out.decode(errors="replace"),
               err.decode(errors="replace"),
               r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)


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


class Failures(list):
    def add(self, workload, variant, phase, what, argv, cwd, run=None):
        item = {"workload": workload, "variant": variant, "phase": phase,
                "what": what,
                "repro": (f"cd {shlex.quote(cwd)} && " if cwd else "")
                         + shlex.join(argv)}
        if run is not None:
            item["rc"] = run.rc
            item["stderr"] = run.stderr[-1500:]
            item["stdout"] = run.stdout[-500:]
        self.append(item)
        log(f"  !! {workload}/{variant} {phase}: {what}")


def describe_failure(run: Run, expect_out: str | None) -> str | None:
    if run.rc is None:
        return f"timed out after {run.seconds:.0f}s (killed)"
    if run.rc != 0:
        return f"exit status {run.rc}"
    if expect_out is not None and run.stdout != expect_out:
        return (f"output differs from native: {run.stdout[:200]!r} "
                f"instead of {expect_out[:200]!r}")
    return None


def bench_workload(w, variants, runs, env, timeout, failures):
    """Warm-up, then `runs` interleaved repetitions. Returns per-variant
    lists of successful times and of all Run records (as dicts)."""
    vs = [v for v in variants if w.kinds is None or v.kind in w.kinds]
    times = {v.name: [] for v in vs}
    records = {v.name: [] for v in vs}
    native = next((v for v in vs if v.kind == "native"), None)

    # warm-up: caches, .pyc files; the check command's output is compared
    check = w.check or w.cmd
    ref = None
    for v in vs:
        argv = v.argv(check)
        r = run_once(argv, w.cwd, env, timeout)
        if v is native:
            ref = r.stdout if r.rc == 0 else None
        what = describe_failure(r, None if v is native else ref)
        if what:
            failures.add(w.name, v.name, "check (warm-up)", what, argv, w.cwd, r)

    ref = None
    for i in range(runs):
        line = []
        for v in vs:
            argv = v.argv(w.cmd)
            r = run_once(argv, w.cwd, env, timeout)
            if v is native and ref is None and r.rc == 0:
                ref = r.stdout
            what = describe_failure(r, None if v is native else ref)
            records[v.name].append({
                "seconds": r.seconds, "rc": r.rc, "cpu_user": r.cpu_user,
                "cpu_sys": r.cpu_sys, "ok": what is None})
            if what:
                failures.add(w.name, v.name, f"run {i + 1}", what, argv, w.cwd, r)
                line.append(f"{v.name} FAIL")
            else:
                times[v.name].append(r.seconds)
                line.append(f"{v.name} {r.seconds:.3f}")
        log(f"  {w.name} [{i + 1}/{runs}] " + "  ".join(line))
    return times, records


# ---------------------------------------------------------------- numbers

def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def summarize(workloads, variants, times):
    """medians and ratios: {workload: {variant: {...}}}"""
    byname = {v.name: v for v in variants}
    table = {}
    for w in workloads:
        row = {}
        for vname, ts in times[w.name].items():
            row[vname] = {"median": statistics.median(ts) if ts else None,
                          "min": min(ts) if ts else None,
                          "max": max(ts) if ts else None, "ok_runs": len(ts)}
        nat = next((row[v.name]["median"] for v in variants
                    if v.kind == "native" and v.name in row), None)
        for vname, cell in row.items():
            m = cell["median"]
            cell["ratio_native"] = m / nat if m and nat else None
            peer = byname[vname].peer
            pm = row.get(peer, {}).get("median") if peer else None
            cell["peer"] = peer
            cell["ratio_peer"] = m / pm if m and pm else None
        table[w.name] = row
    return table


def geomeans(workloads, variants, table, runs_expected):
    """Geometric mean per variant over the workloads every variant ran
    completely (so the variants' means are over the same set)."""
    common = [w.name for w in workloads
              if all(table[w.name].get(v.name, {}).get("ok_runs") == runs_expected
                     for v in variants)]
    out = {}
    for v in variants:
        out[v.name] = {
            "ratio_native": geomean([table[w][v.name]["ratio_native"] for w in common]),
            "ratio_peer": geomean([table[w][v.name]["ratio_peer"] for w in common])
            if v.peer else None,
            "peer": v.peer}
    return common, out


# ---------------------------------------------------------------- output

def fmt_s(cell):
    if not cell or cell["median"] is None:
        return "FAIL" if cell else "-"
    m = cell["median"]
    spread = (cell["max"] - cell["min"]) / m * 100 if m else 0
    s = f"{m:.3f}" if m < 100 else f"{m:.1f}"
    return f"{s} ±{spread / 2:.0f}%"


def fmt_r(x):
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


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


def report(workloads, variants, table, common, gm, mem, out=sys.stdout):
    names = [v.name for v in variants]
    desc = {w.name: w.title for w in workloads}
    rows = [[w.name, desc[w.name]] + [fmt_s(table[w.name].get(n)) for n in names]
            for w in workloads]
    print_table("Median wall-clock seconds (± half the min-max spread)",
                ["workload", "what"] + names, rows, out)

    rel = [v for v in variants if v.kind != "native"]
    rows = [[w.name] + [fmt_r(table[w.name].get(v.name, {}).get("ratio_native"))
                        for v in rel] for w in workloads]
    rows.append(["geomean*"] + [fmt_r(gm[v.name]["ratio_native"]) for v in rel])
    print_table("Ratio to native (lower is better)",
                ["workload"] + [v.name for v in rel], rows, out)

    peered = [v for v in variants if v.peer and any(
        table[w.name].get(v.peer) for w in workloads)]
    if peered:
        rows = [[w.name] + [fmt_r(table[w.name].get(v.name, {}).get("ratio_peer"))
                            for v in peered] for w in workloads]
        rows.append(["geomean*"] + [fmt_r(gm[v.name]["ratio_peer"]) for v in peered])
        print_table("Ratio to its proot peer (below 1: faster than proot)",
                    ["workload"] + [f"{v.name}/{v.peer}" for v in peered], rows, out)
    print(f"\n* geometric mean over the workloads all variants ran: "
          f"{', '.join(common) or 'none'}", file=out)

    if mem:
        print("\nTracer memory, kB (VmRSS / VmHWM):", file=out)
        for vname, m in mem.items():
            print("  " + mem_line(vname, m), file=out)


def mem_line(vname, m):
    def pair(d):
        return f"{d.get('VmRSS', '?')} / {d.get('VmHWM', '?')}" if d else "-"
    s = (f"{vname:<12} {m['processes']} procs: outside {pair(m.get('outside'))}"
         f"  (traced sleeps seen: {m.get('traced_sleeps', '?')})")
    if "after" in m:
        s += (f"; inside via $UMVU_PID: idle {pair(m.get('before'))}, "
              f"{m['processes']} procs {pair(m.get('after'))}")
    if m.get("error"):
        s += f"  !! {m['error']}"
    return s


def write_csv(path, workloads, variants, table, gm, mem):
    cols = ["workload", "description", "variant", "kind", "unit", "ok_runs",
            "median", "min", "max", "ratio_native", "peer", "ratio_peer"]
    kinds = {v.name: v.kind for v in variants}

    def num(x, digits=4):
        return "" if x is None else round(x, digits)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(cols)
        for w in workloads:
            for v in variants:
                c = table[w.name].get(v.name)
                if c is None:
                    continue
                wr.writerow([w.name, w.title, v.name, v.kind, "s", c["ok_runs"],
                             num(c["median"]), num(c["min"]), num(c["max"]),
                             num(c["ratio_native"], 3), c["peer"] or "",
                             num(c["ratio_peer"], 3)])
        for v in variants:
            g = gm[v.name]
            wr.writerow(["geomean", "geometric mean of the ratios", v.name,
                         v.kind, "ratio", "", "", "", "",
                         num(g["ratio_native"], 3), g["peer"] or "",
                         num(g["ratio_peer"], 3)])
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
                             "kB", 1, val, val, val, "", "", ""])


def write_png(path, workloads, variants, table, mem, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = [v for v in variants if v.kind != "native"]
    names = [w.name for w in workloads]
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / max(1, len(rel))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {v.name: colors[j % len(colors)] for j, v in enumerate(rel)}
    labelled = set()
    for i, n in enumerate(names):
        present = [(v, table[n][v.name]["ratio_native"]) for v in rel
                   if table[n].get(v.name, {}).get("ratio_native")]
        for j, (v, y) in enumerate(present):
            x = i + (j - (len(present) - 1) / 2) * width
            ax.bar([x], [y], width, color=color[v.name],
                   label=None if v.name in labelled else v.name)
            labelled.add(v.name)
            ax.annotate(f"{y:.1f}" if y < 10 else f"{y:.0f}", (x, y),
                        ha="center", va="bottom", fontsize=6.5, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{w.name}\n{w.title}" if len(w.title) < 24 else w.name
                        for w in workloads], fontsize=7)
    ax.set_ylabel("time / native time (log scale; lower is better)")
    ax.set_title(f"umvu vs proot: median of {meta['runs']} interleaved runs")
    ax.legend(fontsize=8, loc="upper left")
    ax.margins(y=0.15)

    if mem:
        vn = list(mem)
        vals = [mem[n].get("outside", {}).get("VmRSS", 0) / 1024 for n in vn]
        hwm = [mem[n].get("outside", {}).get("VmHWM", 0) / 1024 for n in vn]
        ax2.bar(range(len(vn)), hwm, 0.6, color="lightgray", label="VmHWM")
        ax2.bar(range(len(vn)), vals, 0.4, color="tab:purple", label="VmRSS")
        for i, v in enumerate(vals):
            ax2.annotate(f"{v:.0f}", (i, v), ha="center", va="bottom",
                         fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax2.set_xticks(range(len(vn)))
        ax2.set_xticklabels(vn, rotation=30, ha="right", fontsize=7)
        n = next(iter(mem.values()))["processes"]
        ax2.set_title(f"tracer memory, {n} processes (MiB)", fontsize=9)
        ax2.legend(fontsize=7)
    else:
        ax2.axis("off")
    fig.text(0.01, 0.01, f"{meta['cpu']}, {meta['nproc']} CPUs, Linux "
             f"{meta['kernel']}, {meta['date']}", fontsize=6, color="gray")
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


def metadata(args, tools, cpus):
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    proot_v = ""
    if tools.proot:
        text = _cmd_out([tools.proot, "--version"])
        v = re.search(r"\b(\d+\.\d+(?:\.\d+)*)\s*$", text, re.M)
        acc = re.search(r"accelerators:\s*(.*)", text)
        proot_v = ("proot " + (v.group(1) if v else "?")
                   + (f" ({acc.group(1).strip()})" if acc else ""))
    git = _cmd_out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(),
        "affinity": sorted(cpus) if cpus else "not pinned",
        "python": platform.python_version(), "umvu": tools.umvu,
        "umvu_git": git, "proot": tools.proot, "proot_version": proot_v,
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
                   "proot on PATH; without one the proot variants are skipped)")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    cpus = None
    if args.cpus:
        cpus = {int(c) for c in args.cpus.split(",")}
        os.sched_setaffinity(0, cpus)

    tools = Tools.find(args.umvu, args.proot)
    for f in dataclasses.fields(Tools):
        setattr(variants_mod.TOOLS, f.name, getattr(tools, f.name))
    variants = [v for v in VARIANTS if v.available()
                and (not args.variants or v.name in args.variants)]
    skipped = [v.name for v in VARIANTS if not v.available()]
    if skipped:
        log(f"bench: skipping {', '.join(skipped)} (tool not found)")
    env = bench_env()
    meta = metadata(args, tools, cpus)
    meta["variants"] = {v.name: {"kind": v.kind, "peer": v.peer,
                                 "example_argv": v.argv("CMD")} for v in variants}
    log(f"bench: {len(variants)} variants, {args.runs} run(s) each, "
        f"umvu {meta['umvu_git']}, {meta['proot_version'] or 'no proot'}")

    failures = Failures()
    times, records, workloads, load = {}, {}, [], {}
    mem = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="umvu-bench-") as tmp:
        if args.keep_tmp:
            tmp = tempfile.mkdtemp(prefix="umvu-bench-")
            log(f"bench: scratch directory {tmp} (kept)")
        ctx = Context(Path(tmp), args.quick)
        for name, build in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            w = build(ctx)
            workloads.append(w)
            log(f"[{name}] {w.title}")
            l0 = os.getloadavg()[0]
            times[name], records[name] = bench_workload(
                w, variants, args.runs, env, args.timeout, failures)
            load[name] = (l0, os.getloadavg()[0])

        if not args.only or "rss" in args.only:
            n, secs = (20, 3) if args.quick else (100, 5)
            for v in variants:
                if v.kind == "native":
                    continue
                log(f"[rss] {v.name}: {n} x sleep {secs}")
                m = rss.measure(v.argv, n, secs, env)
                mem[v.name] = m
                log("  " + mem_line(v.name, m))
                if m.get("error"):
                    failures.add("rss", v.name, "memory", m["error"], m["argv"],
                                 None)

    table = summarize(workloads, variants, times)
    common, gm = geomeans(workloads, variants, table, args.runs)
    meta["loadavg_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)

    report(workloads, variants, table, common, gm, mem)
    if failures:
        print(f"\n{len(failures)} failure(s):")
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
            "runs": records, "summary": table, "geomean": gm,
            "geomean_over": common, "memory": mem, "failures": failures}
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
