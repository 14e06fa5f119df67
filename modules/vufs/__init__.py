"""vufs: file system patchworking (bind, move, merge, cow, mincow).

`vumount -t vufs [-o MODE,except=/P,nochcopy,ro] SOURCE TARGET` makes TARGET
show SOURCE (bind), SOURCE laid over TARGET read-only (merge), or TARGET with
its changes kept in SOURCE (cow, mincow). Every answer is a redirect to a
real file, so programs get real descriptors and read and write natively.
"""

from __future__ import annotations

import errno
import logging

from umvu.module import NOBODY, Module, PathService

from .layers import Layers, remove_leftovers
from .store import META_SUFFIX, STORE
from .options import parse

log = logging.getLogger("umvu")


class Vufs(Module):
    name = "vufs"
    description = "vu filesystem patchworking"
    families = ("path",)

    def mount(self, request):
        opts = parse(request.options, request.flags)    # OptionError: logged
        request.source = self.ctx.resolve(request.caller, request.source)
        return VufsService(self, request, opts)

    def umount(self, service, flags):
        if service.layers is not None and service.layers.store is not None:
            service.layers.store.close()    # its descriptor pins SOURCE's fs


class VufsService(PathService):
    layer_store, layer_meta_suffix = STORE, META_SUFFIX     # host_dir's layers

    def __init__(self, module, request, opts):
        super().__init__(module, request)
        self.opts = opts
        self.layers = None          # needs self.lower, set when mounted

    def attach(self) -> None:
        """Called once the view has given the service its lower view."""
        try:
            self.lower.lstat(self.source)
        except OSError as exc:
            raise OSError(exc.errno, f"vufs: {self.source}: {exc.strerror}")
        if self.opts.mode in ("merge", "cow", "mincow"):
            try:
                self.lower.lstat(self.target)
            except OSError as exc:
                raise OSError(exc.errno, f"vufs: {self.target}: {exc.strerror}")
        self.layers = Layers(self.lower, self.source, self.target, self.opts)
        if self.opts.mode in ("cow", "mincow") and self.source.startswith("/"):
            removed = remove_leftovers(self.lower.real(self.source))
            if removed:
                self.ctx.log.warning("vufs: %s: removed %d unfinished copies "
                                     "(a hypervisor ended in a copy-up)",
                                     self.source, removed)

    def host_dir(self):
        if self.opts.excepts or not self.source.startswith("/"):
            return None
        if self.opts.mode in ("bind", "move"):
            return None if self.opts.ro else (self.source, None)
        return (self.source, self.target)   # merge, cow, mincow: layers

    def confirm(self, path: str) -> bool:
        rel = path[len(self.target):] if self.target != "/" else path
        for skip in self.opts.excepts:
            if rel == skip or rel.startswith(skip.rstrip("/") + "/"):
                return False
        return True

    def rel(self, path: str) -> str:
        return "" if path == self.target else (
            path if self.target == "/" else path[len(self.target):])

    # the walk through the mount, too, is the caller's: a root hypervisor
    # must not follow a link in a directory the caller cannot search
    def lstat(self, path, caller=NOBODY):
        if self.layers.store is not None and _in_store(self.rel(path)):
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        with caller.acting_as():
            return self.layers.lstat(self.rel(path))

    def fd_redirect(self, path, caller):
        try:
            with caller.acting_as():
                return self.layers.fd_redirect(self.rel(path))
        except OSError as exc:
            return -(exc.errno or errno.EIO)

    def fd_modify(self, path, change, caller):
        try:
            with caller.acting_as():
                return self.layers.fd_modify(self.rel(path), change, caller)
        except OSError as exc:
            return -(exc.errno or errno.EIO)

    def readlink(self, path, caller=NOBODY):
        with caller.acting_as():
            return self.layers.readlink(self.rel(path))

    def path_call(self, call):
        rel = self.rel(call.path)
        rel2 = self.rel(call.path2) if call.path2 is not None else None
        if self.layers.store is not None and (_in_store(rel) or _in_store(rel2)):
            return -errno.ENOENT        # the cow bookkeeping is not part of the view
        if self.opts.ro and call.op != "stat" and not (
                call.op == "open" and call.flags & 3 == 0 and
                not call.flags & (0o100 | 0o1000)):
            return -errno.EROFS
        try:
            with call.caller.acting_as():
                return self.layers.call(call, rel, rel2)
        except OSError as exc:
            return -(exc.errno or errno.EIO)


def _in_store(rel: str | None) -> bool:
    return rel is not None and (rel == "/.-" or rel.startswith("/.-/"))

