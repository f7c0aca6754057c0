"""Run callbacks right after named modules finish executing (a sys.meta_path finder)."""

import importlib.abc
import sys

_callbacks: dict = {}


class _PostImportLoader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the callbacks for the module."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        for callback in _callbacks.pop(self._name, ()):
            callback(module)

    def __getattr__(self, attr):
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds watched modules through the other finders and wraps their loader."""

    def find_spec(self, name, path, target=None):
        if name not in _callbacks:
            return None
        spec = _find_with_other_finders(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PostImportLoader(spec.loader, name)
        return spec


def _find_with_other_finders(name, path, target):
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if isinstance(finder, _PostImportFinder) or find_spec is None:
            continue
        spec = find_spec(name, path, target)
        if spec is not None:
            return spec
    return None


def on_import(name: str, callback) -> None:
    """Call ``callback(module)`` once module ``name`` has been executed (now if already)."""
    if name in sys.modules:
        callback(sys.modules[name])
        return
    _callbacks.setdefault(name, []).append(callback)
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def call_after(owner, name: str, after) -> None:
    """Replace owner.name with a wrapper that calls the original, then ``after(*args)`` with the same
    arguments (``self`` first for a method), and returns the original's result."""
    import functools

    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        after(*args)
        return result

    setattr(owner, name, wrapper)
