"""The cow directory's bookkeeping, in VUOS's on-disk format.

SOURCE/.-/P            an empty regular file: P was deleted (a whiteout);
                       a whiteout of a directory hides everything below it
SOURCE/.-/P + '\\x7f'   text, one key=value a line (type, mode in octal, uid,
                       gid, rdev=major,minor): metadata the host file cannot
                       carry, e.g. a chown by an unprivileged user, or a
                       device node created as a plain file
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

STORE = ".-"            # SOURCE/STORE: the bookkeeping directory
META_SUFFIX = "\x7f"
TYPES = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "c": stat.S_IFCHR,
         "b": stat.S_IFBLK, "s": stat.S_IFSOCK, "p": stat.S_IFIFO,
         "l": stat.S_IFLNK}
TYPE_LETTER = {v: k for k, v in TYPES.items()}


class Store:
    def __init__(self, root: str, writable: bool):
        self.root = root.rstrip("/") + "/" + STORE
        if writable:
            os.makedirs(self.root, exist_ok=True)

    def _path(self, rel: str) -> str:
        return self.root + rel

    # ---- whiteouts ---------------------------------------------------------
    def deleted(self, rel: str) -> bool:
        """True when rel or one of its ancestors was deleted."""
        try:
            return stat.S_ISREG(os.stat(self._path(rel)).st_mode)
        except NotADirectoryError:
            return True
        except OSError:
            return False

    def whiteout(self, rel: str) -> None:
        path = self._path(rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        self.drop_meta(rel)

    def dewhiteout(self, rel: str) -> None:
        path = self._path(rel)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            return
        parent = os.path.dirname(path)
        while parent != self.root:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)

    # ---- metadata ------------------------------------------------------------
    def meta(self, rel: str) -> dict:
        try:
            with open(self._path(rel) + META_SUFFIX) as f:
                lines = f.read().split("\n")
        except OSError:
            return {}
        out = {}
        for line in lines:
            key, _, value = line.partition("=")
            if key == "type" and value in TYPES:
                out["type"] = TYPES[value]
            elif key == "mode":
                out["mode"] = int(value, 8)
            elif key in ("uid", "gid"):
                out[key] = int(value)
            elif key == "rdev":
                major, _, minor = value.partition(",")
                out["rdev"] = os.makedev(int(major), int(minor))
        return out

    def set_meta(self, rel: str, **values) -> None:
        meta = self.meta(rel)
        meta.update(values)
        path = self._path(rel) + META_SUFFIX
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        lines = []
        for key, value in meta.items():
            if key == "type":
                lines.append(f"type={TYPE_LETTER[value]}")
            elif key == "mode":
                lines.append(f"mode={value & 0o7777:o}")
            elif key == "rdev":
                lines.append(f"rdev={os.major(value)},{os.minor(value)}")
            else:
                lines.append(f"{key}={value}")
        # written in place (hard links of a file share it), never through
        # a symlink someone planted
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")

    def link_meta(self, old: str, new: str) -> None:
        """A hard link shares its file's metadata."""
        try:
            os.makedirs(os.path.dirname(self._path(new)), mode=0o700, exist_ok=True)
            os.link(self._path(old) + META_SUFFIX, self._path(new) + META_SUFFIX)
        except FileNotFoundError:
            pass

    def drop_meta(self, rel: str) -> None:
        try:
            os.unlink(self._path(rel) + META_SUFFIX)
        except OSError:
            pass

    def rename_meta(self, old: str, new: str) -> None:
        try:
            os.makedirs(os.path.dirname(self._path(new)), mode=0o700, exist_ok=True)
            os.rename(self._path(old) + META_SUFFIX, self._path(new) + META_SUFFIX)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def stat_fields(self, rel: str) -> dict | None:
        """The fields a stat call must show instead of the host's."""
        meta = self.meta(rel)
        if not meta:
            return None
        fields = {}
        if "type" in meta or "mode" in meta:
            fields["mode"] = (meta.get("type", 0), meta.get("mode"))
        for key in ("uid", "gid", "rdev"):
            if key in meta:
                fields[key] = meta[key]
        return fields
