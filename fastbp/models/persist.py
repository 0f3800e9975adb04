"""Save and load fitted estimators: one ``.npz`` file, written atomically, read as untrusted data.

File layout (a NumPy ``.npz`` archive: a zip of ``.npy`` members, readable without pickle):

- ``__fastbp__.npy``: a JSON document {"format": "fastbp-model", "format_version": 1,
  "fastbp_version", "class": the estimator's public name (``fastbp.<class>``), "module": the
  module defining it (informative), "params": the estimator's ``get_params()`` (JSON-encoded;
  numeric arrays as nested lists), "meta": its ``_fitted_meta()``}, as UTF-8 bytes (uint8);
- ``<name>.npy`` for every array of the estimator's ``_fitted_arrays()`` (weights, classes, ...):
  numbers, bools or strings (pandas' object labels are saved as the plain array they hold).

A class takes part by being public in ``fastbp``, decorated with :func:`register` and
implementing ``_fitted_arrays() -> {name: ndarray}``, ``_fitted_meta() -> JSON-able dict`` and
``_restore(arrays, meta)`` (called on ``cls(**params)``).

:func:`load` treats the file as untrusted input:

- it builds only the public fastbp class the file names, and never imports a module the file
  names;
- the zip directory is checked before anything is read: ``.npy`` members only, none twice, stored
  or deflated, not encrypted, each member inside the file and its declared size possible for its
  compressed size;
- a member is read only when the estimator asks for it, and only up to the size its zip entry
  and its ``.npy`` header declare (they must agree); members the model does not name are refused
  without being decompressed;
- arrays are read without pickle: numbers, bools or strings only, floats finite;
- a parameter the file does not name takes its default, or, for a parameter added with a
  default other than what older files meant, that older meaning (the class's ``_OLDER_DEFAULTS``,
  {name: value}: the VAE's ``prior`` is 'fixed' in files written before it existed);
- the parameters go through the estimator's own checks (``_restore`` runs ``_config``), and the
  network they describe may hold no more bytes than the file's arrays
  (:func:`fastbp.nn.parameter_budget`), checked before allocating;
- the restored model must save exactly the arrays and metadata of the file: a silent cast (int
  weights), a wrong shape or a target kind that disagrees with ``classes_`` is refused.

Every failure is a ValueError naming the file and the problem (FileNotFoundError and other errors
of opening the file stay as they are).

Writing goes to an unnamed file in the target's folder (Linux ``O_TMPFILE``), flushed to disk,
then linked and renamed over the target (``os.replace``): a crash, even ``kill -9``, leaves the old
file or the new one and nothing else.  Where ``O_TMPFILE`` is missing a named temporary
``.fastbp-<pid>-*.tmp`` is used instead, and the temporaries of dead processes are removed.
"""
import contextlib
import json
import math
import os
import re
import secrets
import tempfile
import zipfile

import numpy as np

from fastbp import distributed
from fastbp.nn import parameter_budget

__all__ = ["save", "load", "register", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastbp-model"
FORMAT_VERSION = 1
_META_KEY = "__fastbp__"
_MAX_META_BYTES = 64 << 20   # the JSON document (parameters such as a VAE's prior means)
_MAX_DEFLATE_RATIO = 1032    # deflate cannot expand data more than this
_ARRAY_KINDS = "biufUS"      # the dtypes a model's arrays have (no objects, no records)
_TEMPORARY = re.compile(r"\.fastbp-(\d+)-[^/]*\.tmp$")


def register(name):
    """Class decorator: make ``cls``, public in fastbp as ``fastbp.<name>``, saveable."""
    def decorate(cls):
        cls._persist_name = name
        return cls
    return decorate


def _registered(name):
    """The saveable public class ``fastbp.<name>``, or None: the public table of fastbp is the
    registry (its module is fastbp's own choice, never the file's)."""
    import fastbp

    if not isinstance(name, str) or name not in fastbp._LAZY:
        return None
    cls = getattr(fastbp, name)
    return cls if isinstance(cls, type) and getattr(cls, "_persist_name", None) == name else None


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
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_decode(v) for v in value["__tuple__"])
        if set(value) == {"__dtype__"}:
            return np.dtype(value["__dtype__"]).type
        if set(value) == {"__array__", "dtype", "shape"}:
            dtype = np.dtype(value["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"an array parameter of dtype {dtype} is not one fastbp saves")
            return np.array(value["__array__"], dtype=dtype).reshape(value["shape"])
        raise ValueError(f"unexpected parameter encoding {value!r:.200}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# ------------------------------------------------------------------------------------- writing
def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(folder):
    """Remove the named temporaries that saves of processes no longer running left in ``folder``
    (a ``kill -9`` mid-save, where ``O_TMPFILE`` is not available)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
        except (OSError, OverflowError):  # alive under another user, or not a pid
            pass


def _open_unnamed(folder):
    """A file descriptor of an unnamed new file in ``folder`` (O_TMPFILE), or None where the OS
    or the file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError:  # EOPNOTSUPP / EISDIR / EINVAL: a file system without O_TMPFILE
        return None


def _link_unnamed(fd, folder):
    """Give the unnamed file ``fd`` a fresh temporary name in ``folder``; returns it."""
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            name = f".fastbp-{os.getpid()}-{secrets.token_hex(6)}.tmp"
            try:  # a dir_fd makes this linkat(..., AT_SYMLINK_FOLLOW): the file, not /proc's link
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory, follow_symlinks=True)
                return os.path.join(folder, name)
            except FileExistsError:
                continue
    finally:
        os.close(directory)


def _write_atomically(path, write):
    """Call ``write(file)`` into a new file that replaces ``path`` in one step once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(folder)
    temporary = None
    handle = _open_unnamed(folder)
    if handle is None:
        handle, temporary = tempfile.mkstemp(prefix=f".fastbp-{os.getpid()}-", suffix=".tmp",
                                             dir=folder)
    try:
        if temporary is not None:
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            if temporary is None:  # the complete file gets a name only now
                temporary = _link_unnamed(file.fileno(), folder)
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def save(model, path):
    """Write a fitted ``model`` to ``path``, replacing it atomically.

    Parameters
    ----------
    model : a fitted fastbp estimator (MLPClassifier, MLPRegressor, Autoencoder, VAE, GAN).
    path : str or os.PathLike
        Exactly the file written (``.npz`` is the custom suffix; none is added).

    Raises
    ------
    TypeError
        ``model`` is not a class fastbp saves.
    NotFittedError
        ``model`` is not fitted.
    ValueError
        an array of the model is not numbers, bools or strings (e.g. labels of mixed types), or
        holds NaN or infinity.
    OSError
        writing failed; ``path`` is then as it was, and no temporary file is left.

    Notes
    -----
    In a ``fastbp.distributed.data_parallel`` block (where every rank holds the same model) only
    rank 0 writes, and every rank returns once the file is whole.
    """
    from fastbp._version import __version__

    name = getattr(type(model), "_persist_name", None)
    if name is None:
        raise TypeError(f"{type(model).__name__} cannot be saved by fastbp")
    arrays = {key: np.asarray(value) for key, value in model._fitted_arrays().items()}
    for key, array in arrays.items():
        if key == _META_KEY or array.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"cannot save {key!r} of dtype {array.dtype}: not numbers, bools "
                             "or strings")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"cannot save {key!r}: it contains NaN or infinity (load refuses "
                             "such a model)")
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastbp_version": __version__,
                "class": name, "module": type(model).__module__,
                "params": {key: _encode(value) for key, value in model.get_params().items()},
                "meta": model._fitted_meta()}
    payload = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)
    parallel = distributed.current()
    if parallel is None or parallel.rank == 0:  # in a data-parallel block: rank 0 writes, once
        _write_atomically(os.fspath(path), lambda file: np.savez(file, **{_META_KEY: payload},
                                                                 **arrays))
    if parallel is not None:
        parallel.comm.Barrier()  # the file is whole before any rank goes on


# ------------------------------------------------------------------------------------- reading
class _BadFile(ValueError):
    """What is wrong with a model file, found by the reader itself."""


class _Members:
    """The ``.npy`` members of a checked model archive, each read (and checked) on first use."""

    def __init__(self, archive, archive_size):
        self._archive, self._infos, self._arrays = archive, {}, {}
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise _BadFile(f"member {name!r} is not an .npy array")
            key = name[:-4]
            if key in self._infos:
                raise _BadFile(f"member {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise _BadFile(f"member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _BadFile(f"member {name!r} uses compression method {info.compress_type}; "
                               "model files are stored or deflated")
            if info.header_offset + info.compress_size > archive_size:
                raise _BadFile(f"member {name!r} ends past the end of the file (truncated)")
            limit = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
                     else _MAX_DEFLATE_RATIO * max(info.compress_size, 1))
            if info.file_size > limit:
                raise _BadFile(f"member {name!r} declares {info.file_size} bytes, more than its "
                               f"{info.compress_size} compressed bytes can hold")
            self._infos[key] = info

    def __contains__(self, key):
        return key in self._infos

    def __getitem__(self, key):
        if key not in self._arrays:
            if key not in self._infos:
                raise _BadFile(f"inconsistent fastbp model file: it has no array {key!r}")
            self._arrays[key] = self._read(key, self._infos[key])
        return self._arrays[key]

    def keys(self):
        return self._infos.keys()

    def declared_size(self, key):
        """The bytes of member ``key`` as the zip directory declares them."""
        return self._infos[key].file_size

    def declared_bytes(self):
        """The bytes of all the arrays as the zip directory declares them."""
        return sum(info.file_size for key, info in self._infos.items() if key != _META_KEY)

    def _read(self, key, info):
        fmt = np.lib.format
        with self._archive.open(info) as member:
            version = fmt.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise _BadFile(f"array {key!r}: unknown .npy version {version}")
            header = (fmt.read_array_header_1_0 if version == (1, 0)
                      else fmt.read_array_header_2_0)
            shape, fortran, dtype = header(member, max_header_size=10000)
            if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.shape:
                raise _BadFile(f"array {key!r} has dtype {dtype}: not numbers, bools or strings")
            nbytes = math.prod(shape) * dtype.itemsize
            if member.tell() + nbytes != info.file_size:
                raise _BadFile(f"array {key!r}: its header declares {shape} of {dtype} "
                               f"({nbytes} bytes), its zip entry {info.file_size - member.tell()}"
                               " bytes")
            data = member.read(nbytes)
            if len(data) != nbytes or member.read(1):
                raise _BadFile(f"array {key!r} is truncated")
        array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
        array = np.array(array, dtype.newbyteorder("="), order="C")  # owned, writable, native
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise _BadFile(f"array {key!r} contains NaN or infinity")
        return array


def _document(members):
    """The JSON document of the archive, checked to be a fastbp model description."""
    if _META_KEY not in members:
        raise _BadFile(f"not a fastbp model file (no {_META_KEY} entry)")
    if members.declared_size(_META_KEY) > _MAX_META_BYTES:
        raise _BadFile(f"the fastbp metadata declares more than {_MAX_META_BYTES} bytes")
    payload = members[_META_KEY]
    if payload.dtype != np.uint8 or payload.ndim != 1:
        raise _BadFile("not a fastbp model file (its metadata is not UTF-8 bytes)")
    try:
        document = json.loads(payload.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _BadFile(f"the fastbp metadata is corrupted ({error})") from None
    except RecursionError:
        raise _BadFile("the fastbp metadata is corrupted (nested too deeply)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _BadFile("not a fastbp model file (format "
                       f"{document.get('format') if isinstance(document, dict) else None!r:.80})")
    version = document.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise _BadFile(f"model format version {version!r:.80}; this fastbp reads 1 to "
                       f"{FORMAT_VERSION} (upgrade fastbp for newer files)")
    for key in ("params", "meta"):
        if not isinstance(document.get(key), dict):
            raise _BadFile(f"inconsistent fastbp model file (no {key!r} object)")
    return document


def _check_round_trip(model, members, document):
    """The restored model must save exactly what the file holds: nothing cast, dropped or
    added."""
    arrays = {key: np.asarray(value) for key, value in model._fitted_arrays().items()}
    extra = sorted(set(members.keys()) - set(arrays) - {_META_KEY})
    if extra:
        raise _BadFile(f"the file holds members the model does not name: {extra[:10]}")
    missing = sorted(set(arrays) - set(members.keys()))
    if missing:
        raise _BadFile(f"the file lacks the arrays {missing[:10]}")
    for key, array in arrays.items():
        stored = members[key]
        if stored.dtype != array.dtype or stored.shape != array.shape:
            raise _BadFile(f"array {key!r} is {stored.dtype} of shape {stored.shape}, but the "
                           f"model it describes keeps {array.dtype} of shape {array.shape}")
        if not np.array_equal(stored, array):
            raise _BadFile(f"array {key!r} does not survive loading unchanged")
    meta = json.loads(json.dumps(model._fitted_meta()))
    if meta != document["meta"]:
        raise _BadFile(f"its metadata {document['meta']!r:.300} is not what the model it "
                       f"describes has: {meta!r:.300}")


def _read_model(archive, archive_size):
    members = _Members(archive, archive_size)
    document = _document(members)
    name = document.get("class")
    cls = _registered(name)
    if cls is None:
        raise _BadFile(f"it holds a {name!r:.80}, which this fastbp does not know")
    params = document["params"]
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise _BadFile(f"{name} has no parameters {unknown[:10]}")
    params = {**getattr(cls, "_OLDER_DEFAULTS", {}), **params}
    try:
        model = cls(**{key: _decode(value) for key, value in params.items()})
        with parameter_budget(members.declared_bytes(), "the model file"):
            model._restore(members, document["meta"])
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as error:
        raise _BadFile(f"inconsistent fastbp model file ({type(error).__name__}: "
                       f"{error})") from None
    _check_round_trip(model, members, document)
    return model


def load(path):
    """The fitted estimator saved at ``path`` by ``model.save``.

    The file is treated as untrusted input (see the module docstring for what is checked): no
    module it names is imported, nothing it claims is allocated before it is checked against the
    sizes the archive declares, and nothing is unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    estimator
        An estimator of the saved class (``type(model)``), predicting as the saved model did.

    Raises
    ------
    ValueError
        naming the file and the problem, for anything that is not a complete, consistent fastbp
        model file: a foreign or damaged archive, an unknown class, parameters the estimator
        refuses, arrays of another dtype or shape than the model keeps, NaN or infinity, sizes
        that disagree, members the model does not name, a newer format.
    OSError
        opening the file failed (FileNotFoundError, PermissionError, ...), unchanged.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            with zipfile.ZipFile(file) as archive:
                return _read_model(archive, size)
        except MemoryError:
            raise
        except _BadFile as error:
            raise ValueError(f"{path}: {error}") from None
        except ValueError as error:  # the model's own checks of its parameters and arrays
            raise ValueError(f"{path}: inconsistent fastbp model file ({error})") from None
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path} is not a fastbp model file, or it is truncated or "
                             f"corrupted ({error})") from None
        except RecursionError:
            raise ValueError(f"{path}: inconsistent fastbp model file (nested too "
                             "deeply)") from None
        except Exception as error:  # damaged data reaching zipfile, zlib, numpy or the model
            raise ValueError(f"{path}: not a fastbp model file, or it is truncated or corrupted "
                             f"({type(error).__name__}: {error})") from None
