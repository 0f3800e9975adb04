"""Save and load fitted estimators: one ``.npz`` file, written atomically.

File layout (a NumPy ``.npz`` archive, readable without pickle):

- ``__fastbp__``: a JSON document {"format": "fastbp-model", "format_version": 1,
  "fastbp_version", "class": registered name, "module": the fastbp module defining it,
  "params": the estimator's ``get_params()`` (JSON-encoded; numeric arrays as nested lists),
  "meta": its ``_fitted_meta()``},
  stored as UTF-8 bytes (a uint8 array);
- every array of the estimator's ``_fitted_arrays()`` under its own name (weights, classes, ...).

A class takes part by being decorated with :func:`register` and implementing
``_fitted_arrays() -> {name: ndarray}``, ``_fitted_meta() -> JSON-able dict`` and
``_restore(arrays, meta)`` (called on ``cls(**params)``).  The MLP estimators do; autoencoders and
other estimators can do the same.

Writing goes to a temporary file in the target's folder, flushed to disk, then renamed over the
target (``os.replace``): a crash leaves either the old file or the new one, never half of one.
Loading a truncated, corrupted or foreign file raises ValueError saying so.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save", "load", "register", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastbp-model"
FORMAT_VERSION = 1
_META_KEY = "__fastbp__"
_REGISTRY = {}


def register(name):
    """Class decorator: make ``cls`` saveable under ``name`` (unique across fastbp)."""
    def decorate(cls):
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"a class is already registered as {name!r}")
        _REGISTRY[name] = cls
        cls._persist_name = name
        return cls
    return decorate


def _encode(value):
    """A get_params() value as JSON (dtype-likes by name, tuples as lists, numpy scalars as numbers,
    numeric arrays as nested lists with their dtype and shape)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"__array__": value.tolist(), "dtype": value.dtype.name, "shape": list(value.shape)}
    if isinstance(value, (tuple, list)):
        return {"__tuple__": [_encode(v) for v in value]} if isinstance(value, tuple) else [
            _encode(v) for v in value]
    if isinstance(value, type) and issubclass(value, np.generic) or isinstance(value, np.dtype):
        return {"__dtype__": np.dtype(value).name}
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return None  # a generator's state is not part of the model
    raise TypeError(f"cannot save a parameter of type {type(value).__name__}: {value!r}")


def _decode(value):
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__dtype__" in value:
            return np.dtype(value["__dtype__"]).type
        if "__array__" in value:
            return np.array(value["__array__"], dtype=value["dtype"]).reshape(value["shape"])
        raise ValueError(f"unexpected parameter encoding {value!r}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(model, path):
    """Write a fitted ``model`` to ``path`` (exactly that name; ``.npz`` is the custom suffix)."""
    from . import __version__

    name = getattr(type(model), "_persist_name", None)
    if name is None:
        raise TypeError(f"{type(model).__name__} cannot be saved by fastbp")
    arrays = {key: np.asarray(value) for key, value in model._fitted_arrays().items()}
    for key, array in arrays.items():
        if key == _META_KEY or array.dtype.hasobject:
            raise ValueError(f"cannot save {key!r}: object arrays (e.g. mixed-type labels) are not "
                             "supported; use numeric or string labels")
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastbp_version": __version__,
                "class": name, "module": type(model).__module__,
                "params": {key: _encode(value) for key, value in model.get_params().items()},
                "meta": model._fitted_meta()}
    payload = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **{_META_KEY: payload}, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def load(path):
    """The estimator saved at ``path``; ValueError for a file that is not a complete fastbp model."""
    import importlib

    path = os.fspath(path)
    with open(path, "rb") as file:  # FileNotFoundError etc. stay as they are
        raw = file.read()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            if _META_KEY not in archive.files:
                raise ValueError(f"{path} is not a fastbp model file (no {_META_KEY} entry)")
            contents = {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "not a fastbp model" in str(error):
            raise
        raise ValueError(f"{path} is not a fastbp model file, or it is truncated or corrupted "
                         f"({error})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
        raise ValueError(f"{path} is not a fastbp model file, or it is truncated or corrupted "
                         f"({type(error).__name__}: {error})") from None
    try:
        document = json.loads(contents.pop(_META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: the fastbp metadata is corrupted ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastbp model file (format {document.get('format')!r})"
                         if isinstance(document, dict) else f"{path} is not a fastbp model file")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {version!r}; this fastbp reads up to "
                         f"{FORMAT_VERSION} (upgrade fastbp)")
    name, module = document.get("class"), document.get("module")
    if name not in _REGISTRY and isinstance(module, str) and module.startswith("fastbp."):
        try:
            importlib.import_module(module)  # registers the class
        except ImportError:
            pass
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"{path} holds a {name!r}, which this fastbp does not know")
    try:
        model = cls(**{key: _decode(value) for key, value in document["params"].items()})
        model._restore(contents, document["meta"])
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{path}: inconsistent fastbp model file "
                         f"({type(error).__name__}: {error})") from None
    return model
