"""Data-parallel training over MPI (mpi4py): the same fit on many processes, one model.

Every rank runs the same program.  Inside ``with data_parallel():`` every fit is
data-parallel (run it as ``mpiexec -n 4 python train.py``)::

    from fastbp.distributed import data_parallel
    with data_parallel():                  # comm=None: mpi4py's MPI.COMM_WORLD
        clf = fastbp.MLPClassifier(random_state=0).fit(X, y)

Estimators stay plain objects (picklable, clonable): the communicator lives in the context (a
``contextvars.ContextVar``, per thread and asyncio task), not in them.

Modes:

- Replicated (default): every rank passes the same X and y.  Each global minibatch of
  ``batch_size`` rows (the rows one process would take, in its order) is split into P contiguous
  shares (rank r takes rows [n r / P, n (r + 1) / P) of it: sizes differ by at most one row, and a
  rank may have none), each rank computes the gradient sum over its share, one allreduce sums the
  sums (and the row counts), and every rank divides by the global rows and takes the same step.
  That is the minibatch mean exactly, even for an uneven last batch (averaging the ranks' means by
  1/P, as DDP and Horovod do by default, is not); the L2 term is applied once, in the step, with
  the global ``batch_size``.  The fitted model equals one process's fit with the same settings to
  float tolerance (sums in another order), and every rank ends with the same weights.  The ranks
  must hold the same rows: a fit checks a checksum of X and y across ranks first (ValueError on
  every rank otherwise).
- Sharded (``sharded=True``): each rank passes only its own rows (for data that do not fit one
  machine).  The global order: an epoch is ``max_r ceil(n_r / share_r)`` steps, where rank r walks
  its own rows, shuffled by a generator seeded from rank 0's and its rank, in slices of
  ``share_r`` = its share of ``batch_size`` (the split above), contributing no rows once it has
  run out; each step's gradient is the mean over all the rows the ranks contributed.
  ``batch_size='auto'`` and the learning-rate schedules count the rows of all ranks; the
  validation score is rank 0's (on its own held-out rows).

In both modes rank 0's initial weights and random generators (shuffling, dropout) are broadcast
at the start of a fit, and everything that decides when to stop -- the epoch's loss (a global
mean), the validation score, ``tol``, early stopping, callbacks -- is rank 0's figure, broadcast,
so no rank stops alone.  Dropout masks are drawn for the whole global minibatch on every rank and
each rank uses its share's rows: the masks one process would draw.

Faults: an exception that leaves the ``data_parallel`` block on any rank prints its traceback
(naming the rank) and aborts the whole MPI job (``MPI_Abort``), so the other ranks never wait for
it forever.

Where the reduction runs: on the compiled engine (networks of ``Dense`` and ``Dropout`` layers
on the compiled backend, ``fit_path_ == "engine"``), one engine thread calls
``MPI_Allreduce`` on one flat buffer of all gradients between the gradients and the update of
every step, without the GIL (:meth:`DataParallel.reduction` finds it in the MPI library mpi4py
loaded); the loss gradient is scaled by the rows of the whole minibatch before the sum, so the sum
is the exact mean.  Elsewhere (the NumPy backend) the layer-by-layer epoch does the same
through mpi4py (``fastbp.training.data_parallel_epoch``).

Scope today: networks of ``Dense`` and ``Dropout`` layers (MLPClassifier, MLPRegressor,
Autoencoder, also denoising); the VAE, the sparse autoencoder and the GAN do not train
data-parallel yet (a ValueError says so).
"""
import contextlib
import contextvars
import ctypes
import sys
import traceback
import zlib

import numpy as np

__all__ = ["data_parallel", "DataParallel", "current"]

_context = contextvars.ContextVar("fastbp_data_parallel", default=None)


def current():
    """The data-parallel context in force.

    Returns
    -------
    DataParallel or None
        The :class:`DataParallel` of the enclosing ``data_parallel`` block, or None.
    """
    return _context.get()


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"fastbp.distributed needs mpi4py and an MPI library: "
                          f"pip install \"fastbp[mpi]\" ({error})") from None
    return MPI


_allreduce = None


def _allreduce_address(MPI):
    """The address of MPI_Allreduce in the library mpi4py's extension is linked to (looked up
    through the extension, whose dependencies the dynamic linker searches), or why not."""
    global _allreduce
    if _allreduce is None:
        try:
            _allreduce = ctypes.cast(ctypes.CDLL(MPI.__file__).MPI_Allreduce, ctypes.c_void_p).value
        except (OSError, AttributeError) as error:
            _allreduce = f"MPI_Allreduce not found through mpi4py ({error})"
    return _allreduce


def share(n, rank, size):
    """A rank's contiguous share of n rows split over ``size`` ranks.

    Parameters
    ----------
    n : int
        The rows to split.
    rank, size : int
        The rank (0 <= rank < size) and the number of ranks.

    Returns
    -------
    tuple of int
        (lo, hi): the rows [lo, hi) of this rank; sizes differ by at most one (the later ranks
        get the extra rows), and a rank may have none.
    """
    return n * rank // size, n * (rank + 1) // size


class DataParallel:
    """One data-parallel context: the communicator and the collective steps a fit takes.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The ranks taking part.
    sharded : bool
        Whether each rank holds only its own rows.

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
    rank, size : int
        This process's rank and the number of ranks.
    sharded : bool
        Whether each rank holds only its own rows (see the module docstring).
    """

    def __init__(self, comm, sharded):
        self.comm, self.sharded = comm, bool(sharded)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._MPI = _mpi()

    # ------------------------------------------------------------ collectives
    def broadcast(self, value):
        """Rank 0's value on every rank.

        Parameters
        ----------
        value : object
            Any picklable object (read on rank 0 only).

        Returns
        -------
        object
            Rank 0's value.
        """
        return self.comm.bcast(value, root=0)

    def broadcast_arrays(self, arrays):
        """Rank 0's contents of the arrays, in place on every rank.

        Parameters
        ----------
        arrays : list of ndarray
            C-contiguous, of the same shapes and dtypes on every rank.
        """
        for array in arrays:
            self.comm.Bcast(array, root=0)

    def allreduce(self, buffer):
        """The buffer summed over the ranks, in place on every rank.

        Parameters
        ----------
        buffer : ndarray
            C-contiguous, of the same shape and dtype on every rank.
        """
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)

    def sum(self, value):
        """The sum over the ranks of a number or an array.

        Parameters
        ----------
        value : int, float or ndarray
            The same type (and shape) on every rank.

        Returns
        -------
        int, float or ndarray
            A new object; ``value`` is left as it was.
        """
        if isinstance(value, np.ndarray):
            total = np.empty_like(value)
            self.comm.Allreduce(value, total, op=self._MPI.SUM)
            return total
        return self.comm.allreduce(value, op=self._MPI.SUM)

    def step_rows(self, batch_size):
        """Sharded rows: the rows this rank contributes to each step (its share of
        ``batch_size``, at least 1).

        Parameters
        ----------
        batch_size : int
            The global minibatch size.

        Returns
        -------
        int
        """
        lo, hi = share(batch_size, self.rank, self.size)
        return max(hi - lo, 1)

    def reduction(self, dtype):
        """What the compiled engine needs to sum gradients over the ranks itself, between the
        gradients and the update of each step (``fastbp.engine``), or why it cannot.

        MPI_Allreduce is found at run time in the MPI library that mpi4py loaded, as fastbp
        finds its BLAS (nothing MPI-related at build time); MPI handles are ints in MPICH's ABI
        and pointers in Open MPI's (and the MPI 5 ABI's), so their width travels with them.

        Parameters
        ----------
        dtype : numpy.dtype
            float32 or float64: the gradients' type.

        Returns
        -------
        dict or str
            ``{"function", "width", "datatype", "op", "comm"}`` (the address of MPI_Allreduce,
            the handles' width in bytes, and the handles of the datatype, MPI_SUM and the
            communicator as integers), or a phrase saying why not.
        """
        MPI = self._MPI
        function = _allreduce_address(MPI)
        if isinstance(function, str):
            return function
        width = MPI._sizeof(MPI.Comm)
        if width not in (4, 8) or {MPI._sizeof(MPI.Datatype), MPI._sizeof(MPI.Op)} != {width}:
            return f"MPI handles of {width} bytes, not an ABI the engine knows"
        datatype = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]
        return {"function": function, "width": width, "datatype": MPI._handleof(datatype),
                "op": MPI._handleof(MPI.SUM), "comm": MPI._handleof(self.comm)}

    def maximum(self, value):
        """The largest of the ranks' numbers.

        Parameters
        ----------
        value : int or float

        Returns
        -------
        int or float
        """
        return self.comm.allreduce(value, op=self._MPI.MAX)

    # ------------------------------------------------------------ a fit
    def start(self, network, X, Y, rng):
        """Make a fit's start the same on every rank: the same rows (replicated mode: checked),
        rank 0's weights and random generators.

        Parameters
        ----------
        network : fastbp.nn.Sequential
            Its parameters and its layers' generators take rank 0's values.
        X, Y : ndarray
            This rank's training rows and targets.
        rng : numpy.random.Generator
            The fit's shuffling generator (sharded: reseeded per rank from rank 0's).

        Raises
        ------
        ValueError
            Replicated mode, when the ranks' rows differ (on every rank alike).
        """
        if not self.sharded:
            mine = (zlib.crc32(np.ascontiguousarray(X).data),
                    zlib.crc32(np.ascontiguousarray(Y).data), X.shape, Y.shape)
            if len(set(self.comm.allgather(mine))) > 1:
                raise ValueError("data_parallel: the ranks hold different training rows; pass the "
                                 "same X and y and an int random_state on every rank (or use "
                                 "data_parallel(sharded=True) for rows split across ranks)")
        self.broadcast_arrays(network.params())
        generators = [rng] + [layer.rng for layer in network.layers
                              if isinstance(getattr(layer, "rng", None), np.random.Generator)]
        states = self.broadcast([g.bit_generator.state for g in generators])
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state
        if self.sharded:  # each rank shuffles its own rows: its own stream, from rank 0's seed
            rng.bit_generator.state = np.random.default_rng(
                [rng.integers(2 ** 63), self.rank]).bit_generator.state


@contextlib.contextmanager
def data_parallel(comm=None, sharded=False):
    """Make every fit inside the block a data-parallel fit over ``comm`` (see the module docstring).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None, default None
        The ranks taking part; None: ``MPI.COMM_WORLD``.
    sharded : bool, default False
        False: every rank passes the same X and y; True: each rank passes its own rows.

    Yields
    ------
    DataParallel

    Raises
    ------
    ImportError
        Without mpi4py (``pip install "fastbp[mpi]"``).

    Notes
    -----
    NumPy's global RandomState is made rank 0's at the start, so draws from it agree across
    ranks.  An exception leaving the block aborts the MPI job (all ranks) after printing its
    traceback: one rank failing never leaves the others waiting.
    """
    MPI = _mpi()
    context = DataParallel(MPI.COMM_WORLD if comm is None else comm, sharded)
    np.random.set_state(context.broadcast(np.random.get_state()))
    token = _context.set(context)
    try:
        yield context
    except BaseException:
        if context.size > 1:
            sys.stderr.write(f"fastbp: rank {context.rank} of {context.size} failed; aborting the "
                             f"MPI job\n{traceback.format_exc()}")
            sys.stderr.flush()
            context.comm.Abort(1)
        raise
    finally:
        _context.reset(token)
