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

In both modes rank 0's initial weights and random generators (shuffling, dropout, the VAE's
noise) are broadcast at the start of a fit, and everything that decides when to stop -- the
epoch's loss (a global mean), the validation score, ``tol``, early stopping, callbacks -- is rank
0's figure, broadcast, so no rank stops alone.  Replicated rows: dropout masks and the VAE's noise
eps are drawn for the whole global minibatch on every rank and each rank uses its share's rows:
the draws one process would make (sharded rows: each rank draws for its own rows, from streams
seeded by rank 0's generators and its rank, so that no two ranks draw alike).

Sample weights (``fit(..., sample_weight=w)``; replicated: every rank passes all the weights,
checked like the rows; sharded: each rank its own rows' weights): each rank sums its rows'
weighted gradients, the allreduce sums those and the ranks' weights, and every rank divides by
the global minibatch's weight W_B -- the weighted mean over the global minibatch exactly -- and
applies the L2 term over W_B (alpha / W_B, as one process's weighted epoch); a minibatch of
weight 0 takes no step.

What else the objective holds:

- per-row terms (the VAE's KL term, the sparse autoencoder's L1 penalty) are scaled like the
  loss, and the learned prior's gradients (sums over the rows) are reduced with the weights';
- statistics over the whole minibatch -- the sparse autoencoder's mean activation rho_hat (its KL
  penalty), the VAE's learned decoder variance (each minibatch's mean squared residual per
  feature) -- are the global minibatch's: the layer reduces this rank's mean over the ranks inside
  the forward pass, before the gradient that needs it (:class:`Share`, which the epoch hands to
  the layers: they never import this module), so the step is one process's;
- after fit, the VAE's ``decoder_std_`` is over the residuals of every rank's rows of its last
  epoch (each rank sums its steps', one allreduce), the decoder's starting bias over all the
  training rows (sharded: every rank's, :func:`average`); a learned mixture prior starts from
  rank 0's codes.

Faults: an exception that leaves the ``data_parallel`` block on any rank prints its traceback
(naming the rank) and aborts the whole MPI job (``MPI_Abort``), so the other ranks never wait for
it forever.

Where the reduction runs: on the compiled engine (networks of ``Dense`` and ``Dropout`` layers
on the compiled backend, ``fit_path_ == "engine"``), one engine thread calls
``MPI_Allreduce`` on one flat buffer of all gradients between the gradients and the update of
every step, without the GIL (:meth:`DataParallel.reduction` finds it in the MPI library mpi4py
loaded); the loss gradient is scaled by the rows of the whole minibatch before the sum, so the sum
is the exact mean.  Elsewhere (the NumPy backend) the layer-by-layer epoch does the same
through mpi4py (``fastbp.training.data_parallel_epoch``); so do the networks that the engine
does not take (the VAE, the sparse autoencoder: ``fit_path_`` says why) and weighted fits with
zero weights or sharded rows (the engine divides by its own rows' weight).

The GAN (its own epoch of alternating steps, ``fastbp.models.gan``): every step of D and of G
takes this rank's rows of the global minibatch -- replicated: its contiguous share of the real
rows and of the noise z drawn for the whole minibatch on every rank; sharded: its next
``step_rows`` real rows (none once it has run out) and as many z, and for G its share of
``batch_size`` z, drawn from its own generator (the global minibatch's rows and weight for every
D step of an epoch summed over the ranks at the epoch's start) --, scales its rows' loss gradient by the
global rows, and sums that player's gradients (and its loss) over the ranks in one allreduce
(:meth:`DataParallel.sum_arrays`) before the step; D's minibatch-std feature takes its
statistics (real and generated rows apart, and its backward's) over the global minibatch through
the :class:`Share` the step sets on it, so D's running statistic and G's weight average are one
process's by construction.

Scope today: MLPClassifier, MLPRegressor, Autoencoder (also denoising and sparse), the VAE
(every prior, a learned decoder variance) and the GAN, with or without ``sample_weight``, with
the stepping solvers.  ``solver='lbfgs'`` and ``learning_rate='backtracking'`` do not train
data-parallel yet (a ValueError says so), nor does a layer of your own
unless it has a ``share`` attribute (its way of saying that its terms are per row and that it
reduces any statistic over the minibatch through the :class:`Share` set there), nor a model
with its own epoch (``fastbp.training.fit_network``'s ``trainer`` hook) unless the hook has
``data_parallel = True`` (its steps reduce over the ranks themselves).
"""
import contextlib
import contextvars
import ctypes
import sys
import traceback
import zlib

import numpy as np

__all__ = ["data_parallel", "DataParallel", "Share", "average", "current"]

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

    def sum_arrays(self, arrays, value):
        """The arrays and a number summed over the ranks: one allreduce of one flat buffer.

        Parameters
        ----------
        arrays : list of ndarray
            Of one dtype, the same shapes on every rank; replaced by their sums, in place.
        value : float
            This rank's number.

        Returns
        -------
        float
            The sum of the ranks' numbers (in the arrays' precision).
        """
        flat = np.empty(sum(array.size for array in arrays) + 1, arrays[0].dtype)
        offset = 0
        for array in arrays:
            flat[offset:offset + array.size] = array.reshape(-1)
            offset += array.size
        flat[-1] = value
        self.allreduce(flat)
        offset = 0
        for array in arrays:
            array[...] = flat[offset:offset + array.size].reshape(array.shape)
            offset += array.size
        return float(flat[-1])

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

    def mean(self, local, weight):
        """A mean over the rows of every rank from each rank's mean over its own rows: the sum
        over the ranks of ``weight * local``, divided by the sum of the weights (one allreduce).

        Parameters
        ----------
        local : float or ndarray
            This rank's mean (weighted by its rows' weights), float64; ignored when ``weight``
            is 0 (a rank with no rows, whose mean is undefined).
        weight : float >= 0
            This rank's total weight (its rows' weights summed, or its row count).

        Returns
        -------
        float or ndarray of float64
            The mean over all ranks' rows (zeros when every weight is 0), as ``local``.
        """
        local = np.asarray(local, np.float64)
        buffer = np.zeros(local.size + 1)
        if weight:
            np.multiply(local.reshape(-1), weight, out=buffer[:-1])
        buffer[-1] = weight
        self.allreduce(buffer)
        total = buffer[-1]
        result = buffer[:-1] / total if total > 0 else buffer[:-1] * 0.0
        return result.reshape(local.shape) if local.ndim else float(result[0])

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
    def start(self, network, X, Y, rng, sample_weight=None):
        """Make a fit's start the same on every rank: the same rows and weights (replicated mode:
        checked), rank 0's weights and random generators.

        Parameters
        ----------
        network : fastbp.nn.Sequential
            Its parameters and its layers' generators take rank 0's values.
        X, Y : ndarray
            This rank's training rows and targets.
        rng : numpy.random.Generator
            The fit's shuffling generator (sharded: reseeded per rank from rank 0's, as are the
            layers' generators).
        sample_weight : ndarray of float64, shape (n,), optional
            This rank's rows' weights (replicated: all the rows' weights, as on every rank).

        Raises
        ------
        ValueError
            Replicated mode, when the ranks' rows or weights differ (on every rank alike).
        """
        if not self.sharded:
            arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            mine = tuple((zlib.crc32(np.ascontiguousarray(a).data), a.shape) for a in arrays)
            if len(set(self.comm.allgather(mine))) > 1:
                raise ValueError("data_parallel: the ranks hold different training rows (or "
                                 "sample weights); pass the same X, y and sample_weight and an "
                                 "int random_state on every rank (or use "
                                 "data_parallel(sharded=True) for rows split across ranks)")
        self.broadcast_arrays(network.params())
        generators = [rng] + [layer.rng for layer in network.layers
                              if isinstance(getattr(layer, "rng", None), np.random.Generator)]
        states = self.broadcast([g.bit_generator.state for g in generators])
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state
        if self.sharded:  # each rank shuffles its own rows and draws for them (dropout, the
            # VAE's noise): its own streams, from rank 0's seeds
            for generator in {id(g): g for g in generators}.values():
                generator.bit_generator.state = np.random.default_rng(
                    [generator.integers(2 ** 63), self.rank]).bit_generator.state


class Share:
    """This rank's part of one global minibatch, for a layer whose objective has a statistic over
    the whole minibatch (the sparse autoencoder's mean activation rho_hat, the VAE's learned
    decoder variance): the mean over the global minibatch, from this rank's mean over its rows.

    A data-parallel epoch (``fastbp.training.data_parallel_epoch``) sets it for one step as the
    ``share`` attribute of the network and of every layer that has one, and puts None back after
    the step; outside a data-parallel step ``share`` is None and a layer uses its own rows.  Layers
    (``fastbp.nn``, ``fastbp.models._generative``) never import this module: they call ``mean``.

    Parameters
    ----------
    parallel : DataParallel
        The context whose ranks share the minibatch.
    weight : float >= 0
        This rank's weight in the minibatch: its rows' sample weights summed, or its row count.
    count : int >= 0
        This rank's rows of the minibatch.

    Attributes
    ----------
    parallel, weight, count
        As given.
    """

    __slots__ = ("parallel", "weight", "count")

    def __init__(self, parallel, weight, count):
        self.parallel, self.weight, self.count = parallel, weight, count

    def mean(self, local, weighted=True):
        """The global minibatch's mean from this rank's (a collective: every rank calls it at the
        same point of the step; :meth:`DataParallel.mean`).

        Parameters
        ----------
        local : float or ndarray
            This rank's mean over its rows (float64).
        weighted : bool, default True
            True: ``local`` is weighted by the rows' sample weights (the mean of the objective's
            terms); False: a plain mean over the rows.

        Returns
        -------
        float or ndarray of float64
            The mean over the global minibatch.
        """
        return self.parallel.mean(local, self.weight if weighted else self.count)


def average(values, weights=None):
    """``numpy.average(values, axis=0, weights=weights)`` over the training rows: in a sharded
    data-parallel block (:func:`current`), over the rows of every rank (a collective: every rank
    calls it); otherwise over these rows (a replicated block's ranks hold the same ones).

    Parameters
    ----------
    values : ndarray, shape (n, ...)
        One entry per row of this rank's data.
    weights : ndarray of shape (n,), optional
        The rows' weights; None: equal.

    Returns
    -------
    float or ndarray of float64
        The (weighted) mean over the rows.
    """
    parallel = current()
    if parallel is None or not parallel.sharded:
        return np.average(values, axis=0, weights=weights)
    weight = values.shape[0] if weights is None else float(np.sum(weights))
    local = np.average(values, axis=0, weights=weights) if weight else np.zeros(values.shape[1:])
    return parallel.mean(local, weight)


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
