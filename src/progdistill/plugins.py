"""Import paths `package.module:Name` for a user's own tasks and models, checked against signatures.

A recipe may name `task: {name: "mypkg.data:MyTask", ...}` or `model: {type: "mypkg.nets:Net", ...}`;
the other keys are the constructor's keywords. They are checked against its signature when the recipe
is validated, so a typo fails before anything runs. Modules are imported as Python would: from the
Python path, with the current directory first (as `python -m` does), which lets a module beside the
recipe work with the `progdistill` command too. Importing a module runs its code: name only modules
you trust, as with any Python program.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginError(ValueError):
    """An import path that cannot be imported, or keywords its signature does not take."""


def is_import_path(name: Any) -> bool:
    """Whether `name` is written as an import path (contains ':'), as opposed to a built-in name."""
    return isinstance(name, str) and ":" in name


def import_object(path: str) -> Any:
    """The object named by `package.module:Name` (Name may be dotted: `Outer.Inner`).

    Raises PluginError (one line) if the path is malformed, names a module of Python's standard library
    (refused before importing it), the module cannot be imported or raises while importing, or has no
    such attribute.
    """
    if not IMPORT_PATH.match(path):
        raise PluginError(f"{path!r} is not an import path of the form 'package.module:Name'")
    module_name, attr = path.split(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:  # refused before importing: some run code on import (antigravity)
        raise PluginError(f"{path!r} is in Python's standard library ({top}), which holds no task or model")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise PluginError(f"cannot import {path!r}: no module named {e.name!r} (is it on the Python path or in "
                          f"the current directory?)") from None
    except Exception as e:  # the user's module failed while running
        raise PluginError(f"cannot import {path!r}: importing {module_name!r} raised {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"cannot import {path!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def check_kind(obj: Any, path: str, base: type, what: str) -> None:
    """A class must subclass `base`; a Python function (`def`, outside the standard library) is accepted as
    a factory (its result is checked when it is called). Anything else is refused before it is called:
    a recipe is data, and an import path such as `os:system` or `subprocess:run` would otherwise run a
    command with the section's keywords before its result could be refused. Raises PluginError."""
    if isinstance(obj, type):
        if not issubclass(obj, base):
            raise PluginError(f"{path} is not a {what} (a subclass of {base.__module__}.{base.__qualname__}), "
                              f"nor a function that returns one")
        return
    if not inspect.isfunction(obj):  # builtins (os.system), bound methods, partials, callable instances
        raise PluginError(f"{path} is not a {what} class or a Python function that returns one (a "
                          f"{type(obj).__name__})")
    top = (getattr(obj, "__module__", None) or "").split(".")[0]
    if top in sys.stdlib_module_names:
        raise PluginError(f"{path} is a function of Python's standard library ({top}), not a {what} factory")
    if _installed(obj.__code__.co_filename):
        raise PluginError(f"{path} is a function of an installed package ({top}), not a {what} factory of your own: "
                          f"name a {what} class, or a function in your own module")


def _installed(filename: str) -> bool:
    """Whether a function's source file lies in an installed package (a site-packages folder). Functions
    of installed packages (torch.load, numpy.load, torch.hub.load, ...) are refused as factories: a
    recipe naming them with its keywords could unpickle or run any file. A user's own module (beside the
    recipe, on PYTHONPATH, or installed in editable mode) lies elsewhere."""
    import site
    import sysconfig
    from pathlib import Path

    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    roots.add(site.getusersitepackages())
    try:
        file = Path(filename).resolve()
    except OSError:
        return False
    return any(file.is_relative_to(Path(root).resolve()) for root in roots if root)


def keyword_parameters(obj: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """The parameters of `obj` that can be passed by keyword, and whether it takes **kwargs."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # no introspectable signature: accept anything
        return {}, True
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind == p.VAR_KEYWORD for p in params.values())


def check_keywords(obj: Any, path: str, given: Mapping[str, Any], supplied: Iterable[str] = (),
                   passed: Iterable[str] = ()) -> None:
    """Check the keywords `given` (from a recipe) against the signature of `obj`.

    `supplied`: parameter names the framework may fill in if they are missing (a model's task io);
    `passed`: keywords the framework always passes (a task's `data_seed`, `device`): the signature
    must accept them and the recipe must not set them. Raises PluginError naming the first bad keyword.
    """
    named, var_kw = keyword_parameters(obj)
    passed = list(passed)
    for key in given:
        if key in passed:
            raise PluginError(f"keyword {key!r} is set by progdistill, not by the recipe")
        if key not in named and not var_kw:
            raise PluginError(f"{path} takes no keyword {key!r} (it takes: {', '.join(named) or 'none'})")
    missing = [key for key in passed if key not in named and not var_kw]
    if missing:
        raise PluginError(f"{path} must accept the keyword(s) {', '.join(missing)} (progdistill passes them)")
    supplied = set(supplied) | set(passed)
    for name, p in named.items():
        if p.default is p.empty and name not in given and name not in supplied:
            raise PluginError(f"{path} needs keyword {name!r}")
