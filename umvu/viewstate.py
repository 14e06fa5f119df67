"""The running view as data, for `vuname --dump` / `umvu --dump`.

The hypervisor answers the vuctl tag VUCTL_DUMP with this, as JSON; the
command that asked turns it into view-file statements
(umvu.viewfile.from_state) and prints them. It is the view as the asking
process sees it: the modules, the mounts with their options (and the
current settings of vumisc's), and the process's own virtual user.
"""

from __future__ import annotations

import json
import os

from .module import Caller

#: mount(2) flags written back as -o words (ro is `-r`)
FLAG_WORDS = {2: "nosuid", 4: "nodev", 8: "noexec", 16: "sync", 128: "dirsync",
              1024: "noatime", 2048: "nodiratime", 1 << 21: "relatime",
              1 << 24: "strictatime", 1 << 25: "lazytime"}
MS_RDONLY = 1


def describe(view, pid: int) -> dict:
    mounts = []
    for service in view.services:
        if service.module is None or getattr(service, "internal", False):
            continue
        flags = service.flags or 0
        words = [w for bit, w in FLAG_WORDS.items() if flags & bit]
        entry = {"type": service.fstype, "source": service.source,
                 "target": service.target,
                 "options": ",".join(words + ([service.options] if service.options else [])),
                 "readonly": bool(flags & MS_RDONLY)}
        try:
            settings = service.settings()
        except Exception:           # module code: a dump does without it
            settings = {}
        if settings:
            entry["settings"] = settings
        mounts.append(entry)
    state = {"name": view.name,
             "modules": [[name, name in view.permanent] for name in view.modules],
             "mounts": mounts}
    proc = view.tracer.processes.get(pid)
    if view.view_ids(pid, pid) is not None:         # a module virtualizes ids
        state["uid"] = Caller(pid).view_ids(effective=True)[0]
    state["real_uid"] = _real_uid(pid)
    for name, module in view.modules.items():
        if proc is not None and name in proc.data:
            try:
                stack = module.dump_state(proc.data[name]).get("stack")
            except Exception:
                stack = None
            if stack:
                state["stack"] = stack
    return state


def _real_uid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])     # effective
    except OSError:
        pass
    return os.getuid()


def encode(view, pid: int) -> bytes:
    return json.dumps(describe(view, pid)).encode() + b"\0"
