"""Finding a module by name: built-ins (umvu.modules), then the `umvu.modules`
entry point group, then ~/.vu/modules/NAME.py."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import inspect
import os
import re

from .module import Module

VALID_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def user_module_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".vu", "modules")


def find(name: str) -> type[Module]:
    """The Module class called `name`; OSError(ENOENT) when there is none."""
    from . import logs
    logs.ensure()           # module code logs through logging itself
    if not VALID_NAME.match(name):
        raise OSError(errno.EINVAL, f"{name}: invalid module name")
    for source in (_builtin, _entry_point, _user_file):
        pymod = source(name)
        if pymod is not None:
            return _module_class(pymod, name)
    raise OSError(errno.ENOENT, f"{name}: no such module")


def _builtin(name):
    try:
        return importlib.import_module(f"umvu.modules.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"umvu.modules.{name}":
            return None
        raise


def _entry_point(name):
    import importlib.metadata      # slow to import: only when needed
    for ep in importlib.metadata.entry_points(group="umvu.modules"):
        if ep.name == name:
            return ep.load()
    return None


def _user_file(name):
    path = os.path.join(user_module_dir(), name + ".py")
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location(f"umvu_user_module_{name}", path)
    pymod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pymod)
    return pymod


def _module_class(obj, name: str) -> type[Module]:
    if inspect.isclass(obj) and issubclass(obj, Module):
        return obj
    for _, cls in inspect.getmembers(obj, inspect.isclass):
        if issubclass(cls, Module) and cls is not Module and cls.name == name:
            return cls
    raise OSError(errno.ENOEXEC, f"{name}: no Module class named {name!r} in it")
