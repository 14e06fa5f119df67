"""The ways each workload is run ("variants").

A variant is a name plus a function turning a workload's shell command
string into the argv to run. To add one, append to VARIANTS below; nothing
else needs to change:

    Variant("umvu-vufs-bind",
            umvu("{bin}/vu_insmod vufs && {bin}/vumount -t vufs {data_dir} {data_dir}"),
            kind="umvu", peer="proot-bind-usr"),

The function is called as `argv(cmd, timed=False, params=None)`:

* `timed`: run the command through the timer (timer.c, compiled by run.py
  at run time) *inside* the view: `TIMER /bin/sh -c CMD`. The timer prints
  the command's own elapsed time on stderr, so the hypervisor's start-up
  and exit are not in it. A variant's set-up (its prelude: modules, mounts)
  runs in the same view *before* the timer starts.
* `params`: the workload's parameters (Workload.params over DEFAULT_PARAMS),
  substituted into the prelude with str.format together with `{bin}` (the
  directory holding umvu's helper commands vu_insmod, vumount..., which are
  not on PATH inside the view) and `{tmp}` (the run's scratch directory).
  `{data_dir}` is the directory the workload reads (default /usr; seqread
  points it at its own file's directory), so "bind/cow in use" variants
  cover what the workload actually reads; `{cow_dir}` is where a cow mount
  keeps its changes; vufuse workloads give `{image}` and `{mnt}`.

`kind` groups variants ("native", "umvu", "proot", "kernel"): workloads may
be limited to some kinds. `groups` says which workload groups a variant
runs (see workloads.py: "main", "seqread", "startup", "vufuse"). `peer`
names the variant this one is compared with in the "vs peer" ratio.
`setup` and `teardown`, when given, run outside the variant's command,
before and after every run of it, outside the timer (the root-only peers
of the vufuse section mount and unmount the image there); they get the
workload's params and raise SetupError (with the reason) when they cannot
work, in which case run.py prints why and leaves the variant out of that
workload.

The paths of the tools are filled in by run.py (see TOOLS) before any argv
function is called, so the functions only read them then.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable, Optional


@dataclasses.dataclass
class Tools:
    umvu: str = ""          # the umvu launcher
    bin: str = ""           # directory of vu_insmod & co.
    proot: Optional[str] = None     # None: proot variants are skipped
    timer: str = ""         # the compiled timer.c (run.py builds it)
    tmp: str = ""           # the run's scratch directory

    @classmethod
    def find(cls, umvu: Optional[str] = None, proot: Optional[str] = None):
        venv_bin = os.path.dirname(os.path.abspath(sys.executable))
        if umvu is None:
            cand = os.path.join(venv_bin, "umvu")
            umvu = cand if os.access(cand, os.X_OK) else shutil.which("umvu")
        if umvu is None:
            raise SystemExit("bench: umvu not found (run `make venv`)")
        umvu = os.path.abspath(umvu)
        if proot is None:
            proot = default_proot()
        elif not os.access(proot, os.X_OK):
            raise SystemExit(f"bench: {proot}: not an executable")
        return cls(umvu=umvu, bin=os.path.dirname(umvu), proot=proot)


TOOLS = Tools()

#: upstream proot 5.4 with seccomp acceleration (`make bench` builds it
#: with ../shared/peers/build-proot.sh): the peer that matters; Debian's
#: proot 5.1 runs without seccomp here (every syscall stops)
PROOT_BUILDS = (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "build", "proot-build", "src", "proot"),
    "/tmp/proot-build/src/proot")


def default_proot() -> Optional[str]:
    for path in PROOT_BUILDS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("proot")

#: parameters a workload does not set
DEFAULT_PARAMS = {"data_dir": "/usr", "cow_dir": "{tmp}/cow",
                  "image": "{tmp}/vufuse/ext4.img", "mnt": "{tmp}/vufuse/mnt",
                  # the vufuse section's file system: the kernel's own type,
                  # the FUSE program, vumount's type
                  "ktype": "ext4", "fuseprog": "fuse2fs", "vutype": "ext2"}


def params_for(params: Optional[dict]) -> dict:
    p = dict(DEFAULT_PARAMS)
    p.update(params or {})
    return {k: str(v).format(tmp=TOOLS.tmp) for k, v in p.items()}


class SetupError(Exception):
    """A variant's set-up cannot be done here (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    argv: Callable[..., list]       # argv(cmd, timed=False, params=None)
    kind: str                       # "native", "umvu", "proot" or "kernel"
    peer: Optional[str] = None      # variant to compare with ("vs peer")
    needs: Callable[[], Optional[str]] = lambda: None   # why it cannot run
    groups: frozenset = frozenset({"main", "seqread", "startup"})
    setup: Optional[Callable[[dict], None]] = None
    teardown: Optional[Callable[[dict], None]] = None
    note: str = ""                  # shown in the tables' legend
    #: lines that are not the workload's output, dropped from stdout before
    #: it is compared with the reference's
    noise: tuple = ()

    def missing(self) -> Optional[str]:
        """None if the variant can run here, else why not."""
        return self.needs()

    def available(self) -> bool:
        return self.missing() is None


def _timed(cmd: str, timed: bool) -> list:
    return ([TOOLS.timer, "/bin/sh", "-c", cmd] if timed
            else ["/bin/sh", "-c", cmd])


def native(cmd: str, timed: bool = False, params: Optional[dict] = None) -> list:
    return _timed(cmd, timed)


def umvu(prelude: str = "") -> Callable[..., list]:
    """Run the command in a fresh view (no rc files), after `prelude`.

    The prelude runs in the view's first `sh -c`, so module loading and
    mounts take effect for the command, which that shell then runs (timed:
    `exec TIMER /bin/sh -c CMD`, so the set-up is not timed). A failing
    prelude exits with 125; its stdout goes to /dev/null.
    """
    def argv(cmd: str, timed: bool = False,
             params: Optional[dict] = None) -> list:
        if not prelude:
            return [TOOLS.umvu, "-N", "--", *_timed(cmd, timed)]
        p = {k: shlex.quote(v) for k, v in params_for(params).items()}
        pre = prelude.format(bin=TOOLS.bin, tmp=shlex.quote(TOOLS.tmp), **p)
        body = f"exec {shlex.join(_timed(cmd, True))}" if timed else cmd
        # the prelude's stdout is not the workload's: a FUSE helper that
        # vumount starts inherits it (fuse2fs says "Mounting read-only.")
        return [TOOLS.umvu, "-N", "--", "/bin/sh", "-c",
                f"{{ {pre} ; }} >/dev/null || exit 125\n{body}"]
    return argv


def proot(*options: str) -> Callable[..., list]:
    """proot with options; `{data_dir}` & co. in them are substituted."""
    def argv(cmd: str, timed: bool = False,
             params: Optional[dict] = None) -> list:
        p = params_for(params)
        opts = [o.format(tmp=TOOLS.tmp, **p) for o in options]
        return [TOOLS.proot, *opts, *_timed(cmd, timed)]
    return argv


def _need_proot() -> Optional[str]:
    return None if TOOLS.proot else "proot not found"


# ------------------------------------------------ root-only kernel peers

def _need_root(*programs: str, fuse: bool = False) -> Callable[[], Optional[str]]:
    def check() -> Optional[str]:
        if os.geteuid() != 0:
            return "needs root (a real mount)"
        if fuse and not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "/dev/fuse not usable"
        for prog in programs:
            if not shutil.which(prog):
                return f"{prog} not found"
        return None
    return check


def _run(argv: list, timeout: float = 30) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{shlex.join(argv)}: {exc}")
    if r.returncode != 0:
        raise SetupError(f"{shlex.join(argv)}: exit status {r.returncode}: "
                         f"{(r.stderr or r.stdout).strip()[-300:]}")


def _mounted(path: str) -> bool:
    return os.path.ismount(path)


def _unmount(argv: list, mnt: str) -> None:
    """Unmount, retrying while busy (a FUSE daemon still answering)."""
    for _ in range(20):
        if not _mounted(mnt):
            return
        try:
            _run(argv)
        except SetupError:
            time.sleep(0.1)
    if _mounted(mnt):
        _run(["umount", "-l", mnt])
        raise SetupError(f"{mnt}: still mounted after {shlex.join(argv)}; "
                         "lazily unmounted")


def _kernel_fuse_up(params: dict) -> None:
    if _mounted(params["mnt"]):
        raise SetupError(f"{params['mnt']} is already a mount point")
    # fuse2fs daemonizes once the mount is in place
    _run([params["fuseprog"], "-o", "ro", params["image"], params["mnt"]])
    if not _mounted(params["mnt"]):
        raise SetupError("fuse2fs returned but nothing is mounted on "
                         f"{params['mnt']}")


def _kernel_fuse_down(params: dict) -> None:
    _unmount(["fusermount", "-u", params["mnt"]], params["mnt"])


def _loop_up(params: dict) -> None:
    if _mounted(params["mnt"]):
        raise SetupError(f"{params['mnt']} is already a mount point")
    _run(["mount", "-t", params["ktype"], "-o", "loop,ro", params["image"],
          params["mnt"]])


def _loop_down(params: dict) -> None:
    _unmount(["umount", params["mnt"]], params["mnt"])


VUFUSE = frozenset({"vufuse"})

VARIANTS = [
    Variant("native", native, kind="native",
            groups=frozenset({"main", "seqread", "startup"})),
    Variant("umvu", umvu(), kind="umvu", peer="proot"),
    # a module that tightens the seccomp filter (id calls trapped): the
    # workloads make few of those calls, so this must stay near native
    Variant("umvu-uidgid", umvu("{bin}/vu_insmod unrealuidgid"),
            kind="umvu", peer="proot"),
    Variant("proot", proot(), kind="proot", needs=_need_proot),
    # a bind mount the workloads do not use: peer for umvu-vufs-unrelated
    Variant("proot-bind", proot("-b", "/tmp:/mnt"), kind="proot",
            needs=_need_proot),
    # a bind mount in use: the directory the workload reads, onto itself
    Variant("proot-bind-usr", proot("-b", "{data_dir}:{data_dir}"),
            kind="proot", needs=_need_proot),
    # vufs loaded and mounted where the workloads never look: the cost of
    # the path family being trapped (every path call stops in the tracer)
    Variant("umvu-vufs-unrelated",
            umvu("{bin}/vu_insmod vufs && {bin}/vumount -t vufs / /unreal"),
            kind="umvu", peer="proot-bind"),
    # vufs bind mount of the directory the workloads read onto itself
    Variant("umvu-vufs-bind",
            umvu("{bin}/vu_insmod vufs && "
                 "{bin}/vumount -t vufs {data_dir} {data_dir}"),
            kind="umvu", peer="proot-bind-usr"),
    # copy-on-write over all of /usr: every exec and library load of the
    # workloads is below the mount (an `apt-get install` in a cow over /);
    # the peer binds all of /usr onto itself
    Variant("umvu-vufs-cow-usr",
            umvu("mkdir -p {tmp}/cow-usr && {bin}/vu_insmod vufs && "
                 "{bin}/vumount -t vufs -o cow {tmp}/cow-usr /usr"),
            kind="umvu", peer="proot-bind-allusr", groups=frozenset({"main"}),
            note="cow over all of /usr, compared with proot -b /usr:/usr"),
    Variant("proot-bind-allusr", proot("-b", "/usr:/usr"), kind="proot",
            needs=_need_proot, groups=frozenset({"main"})),
    # vufs copy-on-write over the directory the workloads read; proot has
    # no copy-on-write: its nearest peer is the bind mount in use
    Variant("umvu-vufs-cow",
            umvu("mkdir -p {cow_dir} && {bin}/vu_insmod vufs && "
                 "{bin}/vumount -t vufs -o cow {cow_dir} {data_dir}"),
            kind="umvu", peer="proot-bind-usr",
            note="proot has no cow: compared with proot -b D:D"),
    # ---- vufuse section: an ext4 image (workloads.py builds it)
    # the kernel's own ext4 on a loop device: the reference
    Variant("kernel-ext4", native, kind="kernel", groups=VUFUSE,
            needs=_need_root("mount", "umount"),
            setup=_loop_up, teardown=_loop_down),
    # fuse2fs through the kernel's FUSE (a real mount, as root)
    Variant("kernel-fuse", native, kind="kernel", groups=VUFUSE,
            needs=_need_root("fuse2fs", "squashfuse", "fusermount", fuse=True),
            setup=_kernel_fuse_up, teardown=_kernel_fuse_down),
    # fuse2fs as a helper of the view: no kernel FUSE, no root
    Variant("umvu-vufuse",
            umvu("{bin}/vu_insmod vufuse && "
                 "{bin}/vumount -t vufuse{vutype} {image} {mnt}"),
            kind="umvu", peer="kernel-fuse", groups=VUFUSE,
            # fuse2fs runs as a helper of the hypervisor, with umvu's own
            # stdout (not vumount's), and says so when it exits
            noise=("Mounting read-only.",)),
]
