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
        settings = _settings(service)
        if settings:
            entry["settings"] = settings
        mounts.append(entry)
    state = {"name": view.name,
             "modules": [[name, name in view.permanent] for name in view.modules],
             "mounts": mounts}
    proc = view.tracer.processes.get(pid)
    creds = proc.data.get("unrealuidgid") if proc is not None else None
    uid = getattr(getattr(creds, "uid", None), "e", None)
    if uid is not None:
        state["uid"] = uid
    state["real_uid"] = _real_uid(pid)
    stack = _stack(view, proc)
    if stack:
        state["stack"] = stack
    return state


def _settings(service) -> dict:
    """vumisc's settings files (nodename, frequency...), as they read now."""
    text = getattr(service, "text", None)
    if text is None or service.fstype not in ("vumiscuname", "vumisctime"):
        return {}
    names = ("nodename", "domainname") if service.fstype == "vumiscuname" \
        else ("frequency",)
    out = {}
    for name in names:
        try:
            out[name] = text(name).strip()
        except Exception:       # a module's internals: best effort
            pass
    return out


def _stack(view, proc) -> str | None:
    """The process's default network stack (vunet's per-process state:
    {family: stack service}), when one stack serves every family it set."""
    if proc is None:
        return None
    defaults = proc.data.get("vunet")
    if not isinstance(defaults, dict) or not defaults:
        return None
    targets = {getattr(s, "target", None) for s in defaults.values()}
    return targets.pop() if len(targets) == 1 and None not in targets else None


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
