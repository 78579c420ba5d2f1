"""Modules a library imports at its top but the bench never uses, held back while that library loads.

Two libraries pay seconds of start-up for features the bench does not use: python-can imports
asammdf (with numpy and pandas) for its MF4 back-end, typer's rich help imports rich's Markdown
(markdown-it) and Traceback (pygments) renderers. ``hold_back`` installs an import finder that, only
while the named module runs, puts a stand-in in ``sys.modules`` for each module held back. It
takes effect wherever and whenever that module is first imported, so nothing has to import the
library early, and it steps aside once the module has run: the modules held back import normally
afterwards (the bench's own MF4 conversion imports asammdf).

A stand-in is ``None`` (Python's rule that a ``None`` in ``sys.modules`` fails the import: for a
library that treats the module as optional) or a placeholder module made by ``placeholder``, whose
classes load the real module on first use and whose other names load it at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.abc costs ~15 ms at start-up; the import system needs only the methods
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec


class _Deferred(type):
    """The type of a placeholder class: using the class loads the real one and hands over."""

    _module: str
    _name: str

    def _real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls._name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:  # class methods: Traceback.from_exception(...)
        return getattr(cls._real(), attr)

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls._real())


def placeholder(module: str, *classes: str) -> ModuleType:
    """A stand-in for ``module`` whose ``classes`` load it on first use; any other name loads it now."""
    stand_in = ModuleType(module, f"stand-in for {module} while a library that does not need it yet loads")
    for name in classes:
        setattr(stand_in, name, _Deferred(name, (), {"_module": module, "_name": name}))

    def load_now(name: str) -> Any:
        if name.startswith("__"):  # the import system's questions (__path__: a package?) are not a use
            raise AttributeError(name)
        # A name the stand-in does not know: give the real module (a newer library asks for more).
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]
        return getattr(importlib.import_module(module), name)

    stand_in.__getattr__ = load_now  # type: ignore[method-assign]
    return stand_in


class _WithStandIns:
    """The loader of a module that runs with some of its imports replaced by stand-ins."""

    def __init__(self, loader: Loader, stand_ins: dict[str, ModuleType | None]) -> None:
        self._loader = loader
        self._stand_ins = stand_ins

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # A module already imported by someone else: its cost is paid, nothing to save.
        placed = {name: mod for name, mod in self._stand_ins.items() if name not in sys.modules}
        sys.modules.update(placed)  # type: ignore[arg-type]
        try:
            self._loader.exec_module(module)
        finally:
            for name, stand_in in placed.items():
                if name in sys.modules and sys.modules[name] is stand_in:
                    del sys.modules[name]

    def __getattr__(self, name: str) -> object:  # get_source, get_filename, ... for tracebacks and tools
        return getattr(self._loader, name)


class _HoldBack:
    """The import finder of one module: it hands out that module's spec with a wrapped loader, once."""

    def __init__(self, module: str, stand_ins: dict[str, ModuleType | None]) -> None:
        self.module = module
        self._stand_ins = stand_ins

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.module:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _WithStandIns(spec.loader, self._stand_ins)  # type: ignore[assignment]
                return spec
        return None


def hold_back(module: str, stand_ins: dict[str, ModuleType | None]) -> None:
    """While ``module`` is first imported, the modules named in ``stand_ins`` are their stand-ins."""
    if module in sys.modules or any(isinstance(f, _HoldBack) and f.module == module for f in sys.meta_path):
        return  # imported already (too late, nothing to do), or asked twice
    sys.meta_path.insert(0, _HoldBack(module, stand_ins))
