"""The ways each workload is run ("variants").

A variant is a name plus a function turning a workload's shell command
string into the argv to run. To add one (for example vufs once it exists),
append to VARIANTS below; nothing else needs to change:

    Variant("umvu-vufs-bind",
            umvu("vu_insmod vufs && vumount -t vufs -o bind /tmp /mnt"),
            kind="umvu", peer="proot-bind"),

`kind` groups variants: workloads may be limited to some kinds (the
start-up workload only makes sense for native and umvu). `peer` names the
variant this one is compared with in the "vs peer" ratio (umvu against
plain proot, a future vufs bind against `proot -b`).

The paths of the tools are filled in by run.py (see TOOLS) before any argv
function is called, so the functions only read them then. In a prelude,
`{bin}` stands for the directory holding umvu's helper commands
(vu_insmod, vumount, ...), which are not on PATH inside the view.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import Callable, Optional


@dataclasses.dataclass
class Tools:
    umvu: str = ""          # the umvu launcher
    bin: str = ""           # directory of vu_insmod & co.
    proot: Optional[str] = None     # None: proot variants are skipped

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
            proot = shutil.which("proot")
        elif not os.access(proot, os.X_OK):
            raise SystemExit(f"bench: {proot}: not an executable")
        return cls(umvu=umvu, bin=os.path.dirname(umvu), proot=proot)


TOOLS = Tools()


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    argv: Callable[[str], list]
    kind: str                       # "native", "umvu" or "proot"
    peer: Optional[str] = None      # variant to compare with ("vs peer")
    needs: Callable[[], bool] = lambda: True    # False: skip it

    def available(self) -> bool:
        return self.needs()


def native(cmd: str) -> list:
    return ["/bin/sh", "-c", cmd]


def umvu(prelude: str = "") -> Callable[[str], list]:
    """Run the command in a fresh view (no rc files), after `prelude`.

    The prelude runs in the same `sh -c` as the workload, so module loading
    and mounts take effect for it; a failing prelude exits with 125.
    """
    def argv(cmd: str) -> list:
        script = cmd
        if prelude:
            script = f"{{ {prelude.format(bin=TOOLS.bin)} ; }} || exit 125\n{cmd}"
        return [TOOLS.umvu, "-N", "--", "/bin/sh", "-c", script]
    return argv


def proot(*options: str) -> Callable[[str], list]:
    def argv(cmd: str) -> list:
        return [TOOLS.proot, *options, "/bin/sh", "-c", cmd]
    return argv


def _have_proot() -> bool:
    return TOOLS.proot is not None


VARIANTS = [
    Variant("native", native, kind="native"),
    Variant("umvu", umvu(), kind="umvu", peer="proot"),
    # a module that tightens the seccomp filter (id calls trapped): the
    # workloads make few of those calls, so this must stay near native
    Variant("umvu-uidgid", umvu("{bin}/vu_insmod unrealuidgid"),
            kind="umvu", peer="proot"),
    Variant("proot", proot(), kind="proot", needs=_have_proot),
    # a bind mount the workloads do not use: peer for the vufs variants
    Variant("proot-bind", proot("-b", "/tmp:/mnt"), kind="proot",
            needs=_have_proot),
    # To come, once the modules exist (append here):
    #   umvu-vufs-idle  vufs mounted at an unrelated path
    #   umvu-vufs-bind  vufs bind mount the workload goes through
    #   umvu-vufs-cow   vufs copy-on-write mount in use
]
