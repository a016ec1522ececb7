"""Import a model package's modules without running its ``__init__`` until something else needs it.

``segment_anything/__init__.py`` imports its predictor, whose transforms import torchvision (about a
second, ``torch._dynamo`` included); ``mobile_sam/__init__.py`` does the same, and
``mobile_sam/modeling/__init__.py`` imports the TinyViT encoder, whose ``timm`` import pulls in
torchvision and huggingface_hub. persam needs none of that to build the modules it uses (the
``modeling`` classes, and for the decoder alone not even the encoder's). :func:`import_deferring_init`
imports one module with the named packages' ``__init__`` deferred: each such package is put in
``sys.modules`` as its bare module object (its ``__path__`` set, its code not run); its own code
runs, into that same object, on the first access of an attribute it does not yet have, so
``from segment_anything import SamPredictor`` elsewhere in the process still works and gets the
same classes. A package already imported is used as it is.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

__all__ = ["collector_paused", "import_deferring_init"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector for a block that imports and builds long-lived objects.

    Importing PyTorch creates some hundred thousand objects that live as long as the process; the
    collector, triggered by their number, walks the growing heap of them again and again. Paused,
    the import makes the same objects; garbage in cycles made
    meanwhile waits for the next collection after the block. The collector's earlier state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _defer(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(f"No package named {name!r}", name=name)
    package = importlib.util.module_from_spec(spec)  # __name__, __path__, __spec__ set; code not run

    def run_init(attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        del package.__dict__["__getattr__"]  # runs once; the package's own code may define another
        spec.loader.exec_module(package)
        return getattr(package, attribute)

    package.__getattr__ = run_init
    sys.modules[name] = package


def import_deferring_init(module: str, *packages: str) -> ModuleType:
    """Import ``module``, first deferring the ``__init__`` of each of ``packages`` not yet imported.

    Args:
        module: dotted module name, e.g. ``"segment_anything.modeling.mask_decoder"``.
        packages: its parent packages whose ``__init__`` should not run now, outermost first,
            e.g. ``("mobile_sam", "mobile_sam.modeling")``.

    Raises:
        ModuleNotFoundError: a package or the module is not installed.
    """
    for name in packages:
        if name not in sys.modules:
            _defer(name)
    return importlib.import_module(module)
