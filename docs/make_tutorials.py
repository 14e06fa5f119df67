#!/usr/bin/env python3
"""Write docs/tutorials/*.md: tutorials whose sessions are real.

    .venv/bin/python docs/make_tutorials.py [OUTDIR/] [NAME...]

Every block of commands below is run (on the host, or inside `umvu bash`)
and its output put under it, so a tutorial shows what umvu does today.
tests/test_docs.py runs this again and compares: a tutorial that no
longer matches what umvu prints fails the tests. Run as root, sessions run
as the unprivileged uid 65534 (setpriv), as a user would; what changes
from run to run (the scratch directory, dates, pids, temporary names) is
normalised.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
NOBODY = 65534
WORK = "/home/user"           # the scratch directory, as shown
MARK = "@@umvu-tutorial-block@@"


class Host:
    """Commands typed at the host's shell."""

    def __init__(self, *commands: str):
        self.commands = commands


class View:
    """`umvu bash`, then commands typed inside the view, then exit."""

    def __init__(self, *commands: str, flags: str = ""):
        self.commands = commands
        self.flags = flags


# Each tutorial: (file name, title, [prose | Host | View ...]). Prose is
# markdown; a block's transcript follows it.
TUTORIALS = [
    ("first-session", "A first session", [
        "umvu starts a shell whose processes share a *view* of the system. "
        "Nothing changes until a module is loaded in it; then `vumount` "
        "changes what the processes of the view see, and only them.",
        View("vuname -o", "vu_insmod vufs", "vu_lsmod",
             "vumount -t vufs / /unreal", "ls -d /unreal/etc /unreal/usr",
             "echo nameserver 80.80.80.80 > resolv.conf",
             "vumount -t vufs $HOME/resolv.conf /etc/resolv.conf",
             "cat /etc/resolv.conf", "vuname --dump"),
        "Outside the view nothing happened:",
        Host("grep -c 80.80.80.80 /etc/resolv.conf"),
        "`vuname --dump` printed the view as a *view file*: save it, and "
        "`umvu --view FILE` builds the same view again "
        "([viewfile.md](../viewfile.md)).",
        Host("cat > my.vu <<'EOF'\ninsmod vufs\nmount -t vufs ~/resolv.conf /etc/resolv.conf\nEOF",
             "umvu --check my.vu", "umvu --view my.vu -- cat /etc/resolv.conf"),
    ]),
    ("vufs", "vufs: file system patchworking", [
        "`vufs` binds, merges and overlays directories. A copy-on-write "
        "mount keeps every change in a directory of its own: here /etc "
        "can be written, and the host's /etc never is.",
        View("vu_insmod vufs", "mkdir cowetc",
             "vumount -t vufs -o cow $HOME/cowetc /etc",
             "echo 127.0.0.1 myhost >> /etc/hosts", "tail -1 /etc/hosts",
             "find cowetc -type f | sort",
             "vumount -t vufs -o ro /usr /usr", "touch /usr/x"),
        Host("grep -c myhost /etc/hosts"),
        "The same with one flag: `--cow DIR` uses a temporary store "
        "(removed at the end), `--cow DIR:STORE` one that is kept.",
        Host("umvu --cow /etc:$HOME/cowetc -- tail -1 /etc/hosts",
             "umvu --bind $HOME/cowetc:/srv/data --ro /usr -- ls /srv/data"),
    ]),
    ("vufuse", "vufuse: file system images", [
        "`vufuse` mounts file system images with unmodified FUSE programs "
        "(fuse2fs, fusefat, squashfuse, fuse-zip...), run inside the view: "
        "no /dev/fuse, no fusermount, no root.",
        Host("mkdir -p tree/docs && echo hello from an image > tree/docs/hello.txt",
             "/sbin/mkfs.ext2 -q -d tree disk.img 1M"),
        View("vu_insmod vufuse", "vumount -t vufuseext2 $HOME/disk.img /mnt",
             "cat /mnt/docs/hello.txt", "vuumount /mnt"),
        "`--image IMG:DIR` guesses the type (blkid, or the image's magic):",
        Host("umvu --image disk.img:/mnt -- ls /mnt/docs"),
    ]),
    ("vudev", "vudev: virtual devices", [
        "`vudev` gives the view block devices: a file as a disk (as "
        "losetup), a disk in memory, partitions.",
        Host("head -c 1M /dev/zero > disk.img"),
        View("vu_insmod vudev", "vumount -t vudevloop $HOME/disk.img /dev/vda",
             "ls -l /dev/vda | cut -c1-10", "blockdev --getsize64 /dev/vda",
             "vumount -t vudevramdisk -o size=2M none /dev/ram0",
             "blockdev --getsize64 /dev/ram0"),
        "As vido's `--disk`, `umvu --disk IMG` makes /dev/vda, /dev/vdb... "
        "and names them in `$VU_DISK0`...:",
        Host('umvu --disk disk.img -- sh -c \'echo $VU_DISK0; blockdev --getsize64 "$VU_DISK0"\''),
    ]),
    ("vunet", "vunet: network stacks", [
        "`vunet` gives each process a network stack of its own choice. "
        "A `vunetnull` stack has no network at all:",
        View("vu_insmod vunet", "vumount -t vunetnull none /dev/net/null",
             "vustack /dev/net/null python3 -c 'import socket; socket.socket()' 2>&1 | tail -1",
             "python3 -c 'import socket; socket.socket(); print(\"the host stack\")'"),
        "`umvu --net none` runs a command without network; `--net slirp` "
        "and `--net vde:URL` give it a stack of its own (vdestack):",
        Host("umvu --net none -- sh -c 'umvu --dump'"),
    ]),
    ("vumisc", "vumisc: time and names", [
        "`vumisc` changes the view's clocks and its host name, through "
        "directories of settings.",
        View("vu_insmod vumisc", "vumount -t vumiscuname none /etc/uname",
             "echo mybox > /etc/uname/nodename", "hostname",
             "vumount -t vumisctime -o monotonic none /mnt",
             "echo 10 > /mnt/frequency", "cat /mnt/frequency"),
        "The view's clocks now run ten times as fast, and so do its waits "
        "(`-o monotonic`): `sleep 5` in the view lasts half a second. As "
        "one-shot flags:",
        Host("umvu --hostname box --time-scale 10 -- sh -c 'hostname; cat /etc/vutime/frequency'",
             "start=$(date +%s%N); umvu --time-scale 10 -- sleep 5; "
             "echo $(( ($(date +%s%N) - start) / 1000000000 )) seconds on the host"),
    ]),
    ("vubinfmt", "vubinfmt: foreign executables", [
        "`vubinfmt` is binfmt_misc for the view only: run a file through "
        "an interpreter chosen by its extension or magic (qemu-user for "
        "foreign binaries).",
        Host("printf 'import sys\\nprint(\"hello from\", sys.argv[0])\\n' > hello.vux",
             "chmod +x hello.vux"),
        View("vu_insmod vubinfmt",
             "vumount -t vubinfmt none /proc/sys/fs/binfmt_misc",
             "echo ':vux:E::vux::/usr/bin/python3:' > /proc/sys/fs/binfmt_misc/register",
             "./hello.vux", "cat /proc/sys/fs/binfmt_misc/vux"),
    ]),
    ("virtual-root", "A virtual root (as fakeroot, proot -0, vido)", [
        "`--root` (or proot's `-0`) starts the command as uid 0 in the "
        "view, with `unrealuidgid`. With `--cow /` every change goes to a "
        "temporary store, so a package can be installed, unprivileged, "
        "and the host never changes.",
        Host("mkdir -p pkg/DEBIAN pkg/usr/bin",
             "printf 'Package: hello-umvu\\nVersion: 1.0\\nArchitecture: all\\n"
             "Maintainer: me <me@example.org>\\nDescription: a test\\n' > pkg/DEBIAN/control",
             "printf '#!/bin/sh\\necho hello, world\\n' > pkg/usr/bin/hello-umvu",
             "chmod 755 pkg/usr/bin/hello-umvu",
             "dpkg-deb --root-owner-group -b pkg hello.deb >/dev/null",
             "id -un",
             "umvu --root --cow / -- sh -c 'id -un; dpkg -i hello.deb >/dev/null && hello-umvu && ls -l /usr/bin/hello-umvu | cut -d\" \" -f1,3,4'",
             "ls /usr/bin/hello-umvu"),
        "chown and chmod by the virtual root are recorded in the store, and "
        "files it creates are root's (with `--cow DIR:STORE` the records stay "
        "for the next session, as `fakeroot -s`/`-i`).",
        View("id -u", "touch /etc/x && stat -c %U /etc/x",
             "chown nobody /etc/x && stat -c %U /etc/x", flags="--root --cow /etc"),
        "X programs run in a view as well: `umvu --root --hostname box xterm` "
        "(taken under Xvfb by docs/make_screenshot.py):\n\n"
        "![umvu xterm](../images/umvu-xterm.png)",
    ]),
]


def _script(blocks) -> str:
    """A bash script that runs every block, marking where each starts."""
    lines = ["cd \"$HOME\"", "exec 2>&1"]
    for i, block in enumerate(blocks):
        lines.append(f"echo {MARK}{i}")
        if isinstance(block, Host):
            for cmd in block.commands:
                lines.append(f"printf '$ %s\\n' {shlex.quote(_shown(cmd))}")
                lines.append(cmd)
        else:
            inner = ["exec 2>&1"]
            for cmd in block.commands:
                inner.append(f"printf '$ %s\\n' {shlex.quote(cmd)}")
                inner.append(cmd)
            inner.append("printf '$ exit\\n'")
            flags = f"{block.flags} " if block.flags else ""
            lines.append(f"printf '$ umvu {flags}bash\\n'")
            lines.append(f"umvu -N {flags}-- bash -c {shlex.quote(chr(10).join(inner))}")
    return "\n".join(lines) + "\n"


def _shown(cmd: str) -> str:
    """A here-document is shown as typed."""
    return cmd


def run_tutorial(blocks, work: Path) -> list[str]:
    """The transcript of each block."""
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "HOME": str(work), "LC_ALL": "C", "TERM": "dumb", "SHELL": "/bin/bash",
           "USER": "user", "LOGNAME": "user", "TZ": "UTC"}
    argv = ["bash", "-c", _script(blocks)]
    if os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                "--clear-groups", "--"] + argv
    out = subprocess.run(argv, env=env, cwd=work, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120).stdout
    parts = re.split(rf"^{MARK}\d+\n", out, flags=re.M)
    return [normalise(p, work) for p in parts[1:]]


def normalise(text: str, work: Path) -> str:
    text = text.replace(str(work), WORK)
    text = re.sub(r"/tmp/umvu-(cow|clear)-[a-z0-9_]{8}", r"/tmp/umvu-\1-XXXXXXXX", text)
    text = re.sub(r"/tmp/umvu-\d+-[a-z0-9_]{8}", "/tmp/umvu-PID-XXXXXXXX", text)
    # ls -l dates, and the user's name where it is not nobody
    text = re.sub(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3]\d "
                  r"(\d\d:\d\d| \d{4})", "Jan  1 00:00", text)
    if os.geteuid() not in (0, NOBODY):
        import pwd
        me = pwd.getpwuid(os.geteuid()).pw_name
        text = re.sub(rf"\b{re.escape(me)}\b", "nobody", text)
    text = re.sub(r"^real \d+\.\d\d$", lambda m: "real " + _round(m.group()), text, flags=re.M)
    return text


def _round(line: str) -> str:
    """`time -p` of a paced sleep: a tenth of a second is what matters."""
    return f"{float(line.split()[1]):.1f}"


def render(name: str, title: str, items) -> str:
    work = Path(tempfile.mkdtemp(prefix="umvu-tutorial-"))
    os.chmod(work, 0o755)
    if os.geteuid() == 0:
        os.chown(work, NOBODY, NOBODY)
    try:
        blocks = [i for i in items if not isinstance(i, str)]
        transcripts = run_tutorial(blocks, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = [f"# {title}", "",
           "<!-- generated by docs/make_tutorials.py: edit that file, not this one -->",
           ""]
    it = iter(transcripts)
    for item in items:
        if isinstance(item, str):
            out += [item, ""]
        else:
            out += ["```", next(it, "").rstrip("\n"), "```", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    outdir, names = REPO / "docs" / "tutorials", []
    for arg in argv:                # a directory (with a /), or tutorial names
        if "/" in arg:
            outdir = Path(arg)
        else:
            names.append(arg)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, title, items in TUTORIALS:
        if names and name not in names:
            continue
        (outdir / f"{name}.md").write_text(render(name, title, items))
        print(outdir / f"{name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
