"""Which FUSE program serves which `vumount -t vufuseTYPE`.

The table can be extended, or changed, by ~/.vu/vufuse.conf: one line per
type, `TYPE PROGRAM [DEBIAN-PACKAGE]`; `#` starts a comment.
"""

from __future__ import annotations

import os
import shutil

#: type suffix -> (program candidates, Debian package)
BUILTIN = {
    "ext2": (("fuse2fs",), "fuse2fs"),
    "ext3": (("fuse2fs",), "fuse2fs"),
    "ext4": (("fuse2fs",), "fuse2fs"),
    "fat": (("fusefat",), "fusefat"),
    "fatfs": (("fusefat",), "fusefat"),
    "vfat": (("fusefat",), "fusefat"),
    "exfat": (("mount.exfat-fuse", "exfat-fuse"), "exfat-fuse"),
    "iso9660": (("fuseiso9660", "fuseiso"), "fuseiso"),
    "squashfs": (("squashfuse",), "squashfuse"),
    "zip": (("fuse-zip",), "fuse-zip"),
}


#: daemons whose threads race on one image position: two requests at once
#: (two processes reading, or a quick try asked again on a worker) read
#: each other's data unless libfuse runs them one at a time (-s)
SINGLE_THREADED = {"fusefat"}


def config_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".vu", "vufuse.conf")


def table() -> dict:
    programs = dict(BUILTIN)
    try:
        with open(config_path()) as conf:
            for line in conf:
                words = line.split("#", 1)[0].split()
                if len(words) >= 2:
                    programs[words[0]] = ((words[1],), words[2] if len(words) > 2 else words[1])
    except OSError:
        pass
    return programs


def program_for(fstype: str, options: dict, path: str) -> tuple[str, str]:
    """(program path, name) for `vufuseTYPE`, `fuse.PROG` or `-o prog=PROG`.

    Raises OSError(ENODEV) with the message vufuse prints when it is missing.
    """
    if "prog" in options:
        names, package = (options["prog"],), options["prog"]
    elif fstype.startswith("fuse."):
        names, package = (fstype[5:],), fstype[5:]
    else:
        kind = fstype[len("vufuse"):]
        if kind not in table():
            raise OSError(19, f"vufuse: unknown type {fstype} (known: "
                          f"{', '.join(sorted(table()))}; or -o prog=PROGRAM)")
        names, package = table()[kind]
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found, name
    raise OSError(19, f"vufuse: {names[0]} not found (Debian package {package})")


def argv_for(name: str, program: str, source: str, mountpoint: str,
             fs_options: list[str]) -> list[str]:
    """The daemon's command line: foreground, options for the file system."""
    # -f: stay in the foreground (libfuse); exfat-fuse has its own options
    argv = [program, source, mountpoint] + ([] if "exfat" in name else ["-f"])
    if name in SINGLE_THREADED:
        argv.append("-s")
    if fs_options:
        argv += ["-o", ",".join(fs_options)]
    return argv
