"""Look up the scvi-tools model class of a method by name (the table in :data:`MODEL_CLASSES`)."""

from __future__ import annotations

import importlib
import inspect

from ._constants import MODEL_CLASSES


def get_model_class(method: str, *, required: bool = False) -> type | None:
    """Return the scvi-tools model class registered for ``method``, or ``None`` when it is not available.

    The class is named in :data:`scvi_ext.interop.MODEL_CLASSES` as ``"module:Class"``. When the module imports
    but has no attribute ``Class``, its single public ``scvi.model.base.BaseModelClass`` subclass is used, so a
    model that lands under another class name is still found.

    Parameters
    ----------
    method
        Method name (``"scvi"``, ``"piano"``, ``"sysvi"``, ...).
    required
        Raise a ``ValueError`` saying what is missing instead of returning ``None``.

    Returns
    -------
    type or None
        The model class.

    Examples
    --------
    >>> get_model_class("scvi").__name__
    'SCVI'
    >>> get_model_class("no_such_method") is None
    True
    """
    spec = MODEL_CLASSES.get(method)
    if spec is None:
        if required:
            raise ValueError(
                f"method={method!r} has no trainable scvi-tools model (models: {sorted(MODEL_CLASSES)}); "
                "saving a model, covariates and query mapping need one."
            )
        return None
    module_name, class_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if required:
            raise ValueError(
                f"method={method!r}: its model module {module_name!r} cannot be imported ({err}); "
                "this model has not landed in this version of scvi-ext."
            ) from err
        return None
    cls = getattr(module, class_name, None)
    if cls is None:
        from scvi.model.base import BaseModelClass

        found = [
            obj
            for name, obj in vars(module).items()
            if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, BaseModelClass)
        ]
        cls = found[0] if len(found) == 1 else None
    if cls is None and required:
        raise ValueError(
            f"method={method!r}: {module_name!r} has no model class {class_name!r} yet; "
            "this model has not landed in this version of scvi-ext."
        )
    return cls


def available_models() -> list[str]:
    """Return the method names whose model class can be imported now.

    Examples
    --------
    >>> "scvi" in available_models()
    True
    """
    return [m for m in MODEL_CLASSES if get_model_class(m) is not None]
