"""The first import of a named module, run inside a context of the caller's choosing,
or left unexecuted until it is used.

Three things happen around TensorFlow's import wherever it is first imported: ``quiet``
filters its start-up lines from file descriptor 2 and ``machine`` pauses the garbage
collector (each a :class:`FirstImport`), and ``machine`` also leaves two modules Keras
imports for features medtransfer never calls unexecuted until they are used
(:class:`OnFirstUse`). Each is a finder at the front of ``sys.meta_path`` that lets the
other finders find the module, wraps the loader they return, and leaves
``sys.meta_path`` once each of its modules has been imported. Two of them compose: the
first finds through the second, so the second's context runs inside the first's.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager


class _FirstImportFinder(importlib.abc.MetaPathFinder):
    """Hands the first import of each module :meth:`names` gives the loader :meth:`wrap`
    makes of the one the other finders found."""

    def __init__(self):
        self.imported: set[str] = set()

    def names(self) -> frozenset[str]:
        """The modules whose first import this finder changes."""
        raise NotImplementedError

    def wrap(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        """The loader the import uses instead of ``loader``."""
        raise NotImplementedError

    @classmethod
    def install(cls, *args) -> None:
        """Puts one finder of this class at the front of ``sys.meta_path`` (once)."""
        if not any(isinstance(finder, cls) for finder in sys.meta_path):
            sys.meta_path.insert(0, cls(*args))

    def find_spec(self, fullname, path=None, target=None):
        names = self.names()
        if fullname not in names or fullname in self.imported:
            return None
        # Marked first, so that the finders after this one answer, not this one again.
        self.imported.add(fullname)
        if self.imported >= names:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = self.wrap(spec.loader)
        return spec


class FirstImport(_FirstImportFinder):
    """Runs the first import of each module :meth:`names` gives inside :meth:`around`."""

    def around(self, module) -> AbstractContextManager:
        """The context ``module``'s code runs in (``module`` is not executed yet)."""
        raise NotImplementedError

    def wrap(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        return _LoaderAround(loader, self.around)


class OnFirstUse(_FirstImportFinder):
    """Imports each module :meth:`names` gives without running it: its code runs when
    one of its attributes is first read (``importlib.util.LazyLoader``), so a module
    imported only to be at hand costs nothing until it is used."""

    def wrap(self, loader: importlib.abc.Loader) -> importlib.abc.Loader:
        return importlib.util.LazyLoader(loader)


class _LoaderAround(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader,
                 around: Callable[[object], AbstractContextManager]):
        self.loader = loader
        self.around = around

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its own loader; this one only wrapped the import.
        module.__loader__ = module.__spec__.loader = self.loader
        with self.around(module):
            self.loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)
