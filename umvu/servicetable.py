"""The service table: mounted services in mount order, newest first.

Every service gets an epoch when mounted. A lookup made on behalf of a
service (its own calls) passes that service's epoch and sees only older
services, so `vumount -t vufs / /mnt` twice gives /mnt/mnt.
"""

from __future__ import annotations

import itertools

from .module import PathService, Service


def path_under(path: str, top: str) -> bool:
    """True when path is top or lies below it (component-wise)."""
    if top == "/":
        return path.startswith("/")
    return path == top or path.startswith(top + "/")


class ServiceTable:
    def __init__(self):
        self._services: list[Service] = []
        self._paths: list[PathService] = []     # the ones path lookups see
        self._clock = itertools.count(1)

    def __iter__(self):
        return iter(self._services)

    def __len__(self):
        return len(self._services)

    def add(self, service: Service) -> Service:
        service.epoch = next(self._clock)
        self._services.append(service)
        if isinstance(service, PathService):
            self._paths.append(service)
        return service

    def remove(self, service: Service) -> None:
        self._services.remove(service)
        if service in self._paths:
            self._paths.remove(service)

    def host_dirs(self) -> list[tuple]:
        """(mount point, host directory the C core may rewrite to, bottom
        layer, layer store, layer metadata suffix) in mount order
        (PathService.host_dir; ccore.MountRow). Only where no older mount
        lies at, above or below those directories: paths there are the
        older services' to answer."""
        table = []
        for i, s in enumerate(self._paths):
            if s.module is None:
                continue
            dirs = s.host_dir()
            if dirs and any(path_under(d, o.target) or path_under(o.target, d)
                            for d in dirs if d for o in self._paths[:i]):
                dirs = None
            protocol = (s.layer_store, s.layer_meta_suffix) if dirs and dirs[1] \
                else (None, None)
            table.append((s.target, *(dirs or (None, None)), *protocol))
        return table

    def mount_points(self) -> list[str]:
        """Where path services are mounted (the view's own ones excluded)."""
        return [s.target for s in self._paths if s.module is not None]

    def for_path(self, path: str, before: float = float("inf")) -> Service | None:
        """Newest service (older than `before`) whose mount covers path and
        that confirms it."""
        for service in reversed(self._paths):
            if (service.epoch < before and path_under(path, service.target)
                    and service.confirm(path)):
                return service
        return None

    def at(self, target: str) -> Service | None:
        """Newest service mounted exactly on target."""
        for service in reversed(self._services):
            if service.target == target:
                return service
        return None

    def of_module(self, module) -> list[Service]:
        """What the user mounted of a module (its internal services, such as
        vufuse's /dev/fuse, do not keep it loaded)."""
        return [s for s in self._services if s.module is module and not s.internal]
