#!/usr/bin/env python3
"""Conformance check: CPython's own test modules, natively and inside umvu.

    .venv/bin/python bench/check_cpython.py [MODULE...] [--timeout SEC]
                                            [--keep] [--workdir DIR] [-v]

Runs each test module of Debian's python3.11 test suite
(libpython3.11-testsuite, /usr/lib/python3.11/test) twice with
``/usr/bin/python3 -m test``'s own runner (regrtest):

- natively, with TMPDIR=T;
- inside ``umvu -N``, after ``vu_insmod vufs; mkdir -p COW;
  vumount -t vufs -o cow COW T``, with TMPDIR=T.  regrtest works in
  T/test_python_PID, so everything the tests write goes through the cow
  mount.  After the run T on the host must still be empty.

Both runs use paths of the same length (WORK/nat/MODULE/tmp and
WORK/umv/MODULE/tmp).  Every test's outcome (ok, FAIL, ERROR, skipped) is
recorded by a result class put in place of regrtest's, one JSON line per
event, so a crash or a hang still leaves the outcomes of the tests before it.
Subtest failures count as the failure of their test; a class-level skip or
error (setUpClass, setUpModule) counts as one entry under its own name.

Prints, per module, the counts (passed/failed/errors/skipped) natively and
inside umvu, then every test whose outcome differs, with the first lines of
its failure message inside umvu.  Exit status: 0 when no test differs, 1 when
some do, 2 when the check cannot run (no test suite, no umvu).

umvu runs from a copy of umvu/ and modules/ taken at the start (the venv
installs umvu in editable mode and the tree may change while the check
runs), through launchers of umvu, vu_insmod and vumount that put the copy
first on sys.path; --no-snapshot runs .venv/bin/umvu as it is, --tree DIR
snapshots another checkout (its C core from this tree's umvu/ if it has
none).  The header names the commit and a fingerprint of the copy.

Writes WORK/report.json and the runs' logs (WORK/{nat,umv}/MODULE/log);
WORK is a new /tmp/cpycheck-XXXX, removed at the end unless --keep or a
difference was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
MODULES = ["test_os", "test_posix", "test_shutil", "test_glob",
           "test_tempfile", "test_pathlib", "test_tarfile"]
PASSED, FAILED, ERRORS, SKIPPED = "passed", "failed", "errors", "skipped"
CATEGORY = {"ok": PASSED, "expected failure": PASSED,
            "FAIL": FAILED, "unexpected success": FAILED,
            "ERROR": ERRORS, "CRASH": ERRORS, "TIMEOUT": ERRORS,
            "skipped": SKIPPED}
# worst first: the outcome a test keeps when it reports several
SEVERITY = ["TIMEOUT", "CRASH", "ERROR", "FAIL", "unexpected success",
            "ok", "expected failure", "skipped"]

# Runs in /usr/bin/python3 (natively or in the view): regrtest with its
# result class replaced by one that logs each outcome to EVENTS at once.
CHILD = r'''
import json, os, sys, time, traceback
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
module, events = sys.argv[1], sys.argv[2]
out = open(events, "a", buffering=1)
def emit(**kw):
    kw["t"] = round(time.monotonic(), 4)
    out.write(json.dumps(kw) + "\n")
    out.flush()

from test.support import testresult
Base = testresult.RegressionTestResult

def describe(err):
    etype, value, tb = err
    where = ""
    for fr in traceback.extract_tb(tb):
        if "/test/" in fr.filename and "/unittest/" not in fr.filename:
            where = "%s:%d in %s" % (os.path.basename(fr.filename),
                                     fr.lineno, fr.name)
    msg = "".join(traceback.format_exception_only(etype, value))
    return where, msg

class Recorder(Base):
    def _log(self, test, outcome, err=None, reason=None, sub=None):
        ev = {"ev": "result", "id": test.id(), "outcome": outcome}
        if sub is not None:
            ev["sub"] = sub
        if reason is not None:
            ev["msg"] = str(reason)
        if err is not None:
            ev["where"], ev["msg"] = describe(err)
            ev["tb"] = self._exc_info_to_string(err, test)
        emit(**ev)

    def startTest(self, test):
        emit(ev="start", id=test.id())
        super().startTest(test)

    def addSuccess(self, test):
        self._log(test, "ok")
        super().addSuccess(test)

    def addFailure(self, test, err):
        self._log(test, "FAIL", err)
        super().addFailure(test, err)

    def addError(self, test, err):
        self._log(test, "ERROR", err)
        super().addError(test, err)

    def addSkip(self, test, reason):
        self._log(test, "skipped", reason=reason)
        super().addSkip(test, reason)

    def addExpectedFailure(self, test, err):
        self._log(test, "expected failure")
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test):
        self._log(test, "unexpected success")
        super().addUnexpectedSuccess(test)

    def addSubTest(self, test, subtest, err):
        if err is not None:
            bad = "FAIL" if issubclass(err[0], test.failureException) \
                else "ERROR"
            self._log(test, bad, err, sub=subtest._subDescription())
        super().addSubTest(test, subtest, err)

testresult.RegressionTestResult = Recorder

from test.libregrtest import main
sys.argv = [sys.argv[0], "-v", "--fail-env-changed"] + sys.argv[3:] + [module]
try:
    main()
except SystemExit as exc:
    emit(ev="exit", code=exc.code)
    raise
'''

# Inside the view: load vufs, mount the cow, then run the command.
VIEW_SH = r'''
set -e
"$1" vufs
mkdir -p "$2"
"$3" -t vufs -o cow "$2" "$4"
export TMPDIR="$4"
shift 4
exec "$@"
'''


def snapshot(tree: Path, dest: Path, venv_bin: Path):
    """Copy TREE's umvu package and modules to DEST; return the umvu
    launcher (vu_insmod, vumount beside it) and a fingerprint of the copy."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.o")
    lib = dest / "lib"
    shutil.copytree(tree / "umvu", lib / "umvu", ignore=ignore)
    shutil.rmtree(lib / "umvu" / "modules", ignore_errors=True)
    shutil.copytree(tree / "modules", lib / "umvu" / "modules", ignore=ignore)
    if not list((lib / "umvu").glob("_core*.so")):
        for so in (ROOT / "umvu").glob("_core*.so"):
            shutil.copy2(so, lib / "umvu" / so.name)
    h = hashlib.sha1()
    for p in sorted(lib.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(lib)).encode() + b"\0" + p.read_bytes())
    bindir = dest / "bin"
    bindir.mkdir()
    for name in ("umvu", "vu_insmod", "vumount"):
        text = (venv_bin / name).read_text()
        shebang, _, rest = text.partition("\n")
        launcher = bindir / name
        launcher.write_text("%s\nimport sys\nsys.path.insert(0, %r)\n%s"
                            % (shebang, str(lib), rest))
        launcher.chmod(0o755)
    return str(bindir / "umvu"), h.hexdigest()[:12]


def git_version(tree: Path) -> str:
    def git(*a):
        return subprocess.run(["git", "-C", str(tree)] + list(a),
                              capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "no git"
    dirty = git("status", "--porcelain", "--", "umvu", "modules", "csrc")
    return head + (" + uncommitted changes" if dirty else "")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("PYTHON", "UMVU_")) or k in ("VIRTUAL_ENV",):
            del env[k]
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if p and p != venv_bin)
    return env


def run_one(mode, module, base, umvu_bin, timeout, regrtest_args):
    """Run MODULE natively (mode 'nat') or in umvu ('umv') under BASE."""
    d = base / mode / module
    tmp, cow = d / "tmp", d / "cow"
    tmp.mkdir(parents=True)
    events = d / "events.jsonl"
    logf = d / "log"
    child = [PYTHON, "-c", CHILD, module, str(events)] + regrtest_args
    env = clean_env()
    if mode == "nat":
        env["TMPDIR"] = str(tmp)
        cmd = child
    else:
        vbin = Path(umvu_bin).parent
        cmd = [umvu_bin, "-N", "--", "/bin/sh", "-c", VIEW_SH, "sh",
               str(vbin / "vu_insmod"), str(cow), str(vbin / "vumount"),
               str(tmp)] + child
    t0 = time.monotonic()
    timed_out = False
    with open(logf, "wb") as lf:
        p = subprocess.Popen(cmd, cwd=d, env=env, stdin=subprocess.DEVNULL,
                             stdout=lf, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = p.wait()
    elapsed = time.monotonic() - t0
    return collect(events, rc, timed_out, elapsed, tmp, cow, mode, logf)


def collect(events, rc, timed_out, elapsed, tmp, cow, mode, logf):
    tests = {}          # id -> {"outcome", "msg", "where", "tb", "sub"}
    started = None
    exit_code = None
    t_start = {}
    if events.exists():
        for line in events.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev["ev"] == "start":
                started = ev["id"]
                t_start[ev["id"]] = ev.get("t")
            elif ev["ev"] == "exit":
                exit_code = ev["code"]
            elif ev["ev"] == "result":
                if ev["id"] == started:
                    started = None
                if t_start.get(ev["id"]) is not None and "t" in ev:
                    ev["dt"] = round(ev["t"] - t_start[ev["id"]], 3)
                old = tests.get(ev["id"])
                if old is None or (SEVERITY.index(ev["outcome"])
                                   < SEVERITY.index(old["outcome"])):
                    tests[ev["id"]] = ev
    # a test that started and never reported: the run died or hung in it
    if started is not None and started not in tests:
        tests[started] = {"outcome": "TIMEOUT" if timed_out else "CRASH",
                          "msg": "run %s in this test (exit status %s)" % (
                              "timed out" if timed_out else "ended", rc)}
    if timed_out:
        status = "TIMEOUT"
    elif exit_code is None:
        status = "CRASH (exit status %s)" % rc
    elif exit_code == 3:
        status = "ENV CHANGED"
    elif exit_code == 130:
        status = "INTERRUPTED"
    elif exit_code in (0, 2):
        status = "completed"
    else:
        status = "exit %s" % exit_code
    notes = []
    if mode == "umv":
        leaked = sorted(os.listdir(tmp)) if tmp.is_dir() else ["(T gone)"]
        if leaked:
            notes.append("cow mount leaked to the host's T: %s"
                         % ", ".join(leaked[:5]))
        if not cow.is_dir() or not os.listdir(cow):
            notes.append("nothing reached the cow directory: was the mount "
                         "made? (see %s)" % logf)
    counts = {PASSED: 0, FAILED: 0, ERRORS: 0, SKIPPED: 0}
    for t in tests.values():
        counts[CATEGORY[t["outcome"]]] += 1
    return {"tests": tests, "status": status, "rc": rc, "time": elapsed,
            "counts": counts, "notes": notes, "log": str(logf)}


def short_msg(t, lines):
    out = []
    if t.get("sub"):
        out.append("subtest %s" % t["sub"])
    if t.get("where"):
        out.append("at " + t["where"])
    msg = (t.get("msg") or "").rstrip().splitlines()
    out.extend(msg[:lines])
    if len(msg) > lines:
        out.append("...")
    return out


def compare(nat, umv):
    diffs = []
    for tid in sorted(set(nat["tests"]) | set(umv["tests"])):
        a, b = nat["tests"].get(tid), umv["tests"].get(tid)
        oa = a["outcome"] if a else "missing"
        ob = b["outcome"] if b else "missing"
        ca = CATEGORY.get(oa, oa)
        cb = CATEGORY.get(ob, ob)
        if ca != cb:
            diffs.append({"id": tid, "native": oa, "umvu": ob,
                          "native_entry": a, "umvu_entry": b})
    return diffs


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="CPython's test modules natively and inside umvu "
                    "(vufs cow over TMPDIR), compared test by test")
    ap.add_argument("modules", nargs="*", default=MODULES,
                    help="test modules (default: %s)" % " ".join(MODULES))
    ap.add_argument("--umvu", default=str(ROOT / ".venv" / "bin" / "umvu"),
                    help="umvu executable (vu_insmod, vumount beside it)")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run --umvu from the tree as it is, not a copy")
    ap.add_argument("--tree", default=str(ROOT),
                    help="checkout whose umvu/ and modules/ are copied "
                    "(default: this one)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds per module and run (default 300)")
    ap.add_argument("--workdir", help="work directory (default: a new "
                    "/tmp/cpycheck-XXXX)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory")
    ap.add_argument("--lines", type=int, default=4,
                    help="lines of each failure message shown (default 4)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also show each differing test's native message")
    ap.add_argument("--regrtest-arg", action="append", default=[],
                    metavar="ARG", help="extra argument for regrtest "
                    "(e.g. --regrtest-arg=-mtest_walk*)")
    args = ap.parse_args(argv)

    ver = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % "
                          "sys.version_info[:2])"], capture_output=True,
                         text=True).stdout.strip()
    suite = Path("/usr/lib/python%s/test" % ver)
    missing = [m for m in args.modules if not (suite / (m + ".py")).exists()]
    if missing or not (suite / "libregrtest").is_dir():
        log("check_cpython: %s has no %s; install it with:\n"
            "  apt-get install -y libpython%s-testsuite"
            % (suite, " ".join(missing) or "libregrtest", ver))
        return 2
    if not os.access(args.umvu, os.X_OK):
        log("check_cpython: no umvu at %s (make venv)" % args.umvu)
        return 2

    if args.workdir:
        base = Path(args.workdir).resolve()
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="cpycheck-", dir="/tmp"))
    tree = Path(args.tree).resolve()
    umvu_bin, version = args.umvu, git_version(tree)
    if args.no_snapshot:
        version += ", no snapshot"
    else:
        umvu_bin, finger = snapshot(tree, base / "umvu-snapshot",
                                    Path(args.umvu).parent)
        version += ", snapshot %s" % finger
    log("check_cpython: python %s, uid %d, umvu %s (%s), work directory %s"
        % (ver, os.getuid(), tree, version, base))

    results = {}
    t_start = time.monotonic()
    for m in args.modules:
        nat = run_one("nat", m, base, umvu_bin, args.timeout,
                      args.regrtest_arg)
        log("  %-14s native %6.1fs  %s" % (m, nat["time"], nat["status"]))
        umv = run_one("umv", m, base, umvu_bin, args.timeout,
                      args.regrtest_arg)
        log("  %-14s umvu   %6.1fs  %s" % (m, umv["time"], umv["status"]))
        results[m] = {"native": nat, "umvu": umv,
                      "diffs": compare(nat, umv)}

    # the table
    def cnt(r):
        c = r["counts"]
        return "%4d %4d %4d %4d" % (c[PASSED], c[FAILED], c[ERRORS],
                                    c[SKIPPED])
    print()
    print("%-14s %-19s   %-19s  %8s %8s  %5s" % (
        "", "native", "umvu (vufs cow)", "time", "time", ""))
    print("%-14s %-19s   %-19s  %8s %8s  %5s" % (
        "module", "pass fail  err skip", "pass fail  err skip",
        "native", "umvu", "diffs"))
    total_diffs = 0
    for m, r in results.items():
        n, u = r["native"], r["umvu"]
        nd = len(r["diffs"]) + (n["status"] != u["status"]) + len(u["notes"])
        total_diffs += nd
        print("%-14s %s   %s  %7.1fs %7.1fs  %5d" % (
            m, cnt(n), cnt(u), n["time"], u["time"], nd))
    print()

    # where the time goes inside umvu
    slow = sorted(((t.get("dt") or 0, tid, r["native"]["tests"].get(tid, {})
                    .get("dt")) for r in results.values()
                   for tid, t in r["umvu"]["tests"].items()), reverse=True)
    if slow:
        print("slowest tests inside umvu (native time):")
        for dt, tid, ndt in slow[:5]:
            print("  %6.1fs (%s)  %s" % (dt, "%.2fs" % ndt if ndt is not None
                                        else "-", tid))
        print()

    # same outcome, another reason: not counted, but worth a look
    for m, r in results.items():
        for tid, u in r["umvu"]["tests"].items():
            n = r["native"]["tests"].get(tid)
            if n and n["outcome"] == u["outcome"] == "skipped" and \
                    n.get("msg") != u.get("msg"):
                print("note: %s skipped for another reason: native %r, "
                      "umvu %r" % (tid, n.get("msg"), u.get("msg")))

    for m, r in results.items():
        n, u = r["native"], r["umvu"]
        if not (r["diffs"] or n["status"] != u["status"] or u["notes"]):
            continue
        print("== %s" % m)
        if n["status"] != u["status"]:
            print("  run status: native %s, umvu %s (log: %s)"
                  % (n["status"], u["status"], u["log"]))
        for note in u["notes"]:
            print("  " + note)
        for d in r["diffs"]:
            print("  %s: native %s, umvu %s" % (d["id"], d["native"],
                                                d["umvu"]))
            if d["umvu_entry"] is not None:
                for line in short_msg(d["umvu_entry"], args.lines):
                    print("      | " + line)
            if args.verbose and d["native_entry"] is not None:
                for line in short_msg(d["native_entry"], args.lines):
                    print("      native | " + line)
        print()

    report = {"python": ver, "uid": os.getuid(), "workdir": str(base),
              "umvu": {"tree": str(tree), "version": version},
              "time": time.monotonic() - t_start, "modules": {
                  m: {"native": {k: v for k, v in r["native"].items()},
                      "umvu": {k: v for k, v in r["umvu"].items()},
                      "diffs": [{k: d[k] for k in ("id", "native", "umvu")}
                                for d in r["diffs"]]}
                  for m, r in results.items()}}
    (base / "report.json").write_text(json.dumps(report, indent=1))
    print("check-cpython: %d module(s), %d difference(s), %.0fs"
          % (len(results), total_diffs, time.monotonic() - t_start))
    if args.keep or total_diffs:
        print("details: %s/report.json, logs: %s/{nat,umv}/MODULE/log"
              % (base, base))
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if total_diffs else 0


if __name__ == "__main__":
    sys.exit(main())
