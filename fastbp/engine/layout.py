"""What crosses from Python to the engine, as named structures defined here once: the network
description the engine loads (``fb_desc``, ``FIELDS``), the arguments of one call (``fb_call``,
``CALL_FIELDS``) and its results (``fb_result``, ``RESULT_FIELDS``).  setup.py generates the C
structs (fastbp/engine/_layout.h, build output) from these lists, and fastbp.engine builds NumPy
structured dtypes from the same lists, fills them by field name and checks at import that the
compiled structs have the dtypes' sizes (``_c_train.STRUCT_SIZES``).
Pure Python: setup.py reads it without NumPy (and this file reads the registry's limits from its
file then, as it does).

Every field is 8 bytes (int64 "i8", float64 "f8", or an address "u8"), so the C struct and the
dtype have the same layout, with no padding.  A count is the number of entries (per dense layer,
per parameter W1, b1, W2, ..., per dropout generator group); layer l maps d[l] -> d[l + 1].
"""
if __package__:
    from fastbp.kernels import registry
else:  # loaded alone, by setup.py
    import importlib.util
    import os
    _spec = importlib.util.spec_from_file_location(
        "_fastbp_registry", os.path.join(os.path.dirname(__file__), "..", "kernels", "registry.py"))
    registry = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(registry)

MAX_LAYERS = 32      # dense layers (FB_MAXL)
MAX_THREADS = 16     # engine threads (FB_MAXT; fewer than 64: a job's count shares a word with its number)
MAX_GENERATORS = 8   # random generators of the dropout layers (FB_MAXG)

# the penalties on a hidden layer's output h that the engine computes (the sparse autoencoder's,
# fastbp.models._generative.SparsityPenalty): weight mean_i ||h_i||_1, or weight sum_j KL(rho ||
# rho_hat_j) of the minibatch's mean activations rho_hat
SPARSITY = {"l1": 1, "kl": 2}

_L, _P, _G = MAX_LAYERS, 2 * MAX_LAYERS, MAX_GENERATORS
FIELDS = [
    # name, kind, entries (1: a scalar), meaning
    ("L", "i8", 1, "dense layers"),
    ("B", "i8", 1, "rows per minibatch"),
    ("loss", "i8", 1, "loss code (fastbp.kernels.registry)"),
    ("labels", "i8", 1, "whether the targets are intp class labels"),
    ("opt", "i8", 1, "optimizer step code (registry.STEPS)"),
    ("groups", "i8", 1, "dropout generator groups"),
    ("dws_size", "i8", 1, "entries per thread of the dW scratch"),
    ("dws_threads", "i8", 1, "threads the dW scratch has room for"),
    ("d", "i8", _L + 1, "widths: d[0] inputs, d[l + 1] outputs of layer l"),
    ("act", "i8", _L, "activation code per layer"),
    ("drop", "i8", _L, "whether a Dropout precedes layer l"),
    ("dgroup", "i8", _L, "its generator group"),
    ("doff", "i8", _L, "offset of its draws in the group's block, in row widths"),
    ("gwidth", "i8", _G, "total width of a group's layers"),
    ("hyper", "f8", registry.MAX_HYPER, "the step's hyperparameters (registry.STEPS order)"),
    ("wd_index", "i8", 1, "the position of weight_decay among them (per parameter: wd)"),
    ("alpha", "f8", _L, "activation parameter per layer"),
    ("rate", "f8", _L, "dropout rate per layer"),
    ("wd", "f8", _P, "weight decay per parameter"),
    ("call", "u8", 1, "the arguments of a call (an fb_call, CALL_FIELDS)"),
    ("result", "u8", 1, "the results of a call (an fb_result, RESULT_FIELDS)"),
    ("blas_get", "u8", 1, "the BLAS's get-thread-count function, or 0"),
    ("blas_set", "u8", 1, "its set-thread-count function, or 0"),
    ("sgemm", "u8", 1, "an LP64 sgemm, or 0 (SciPy's)"),
    ("sgemm64", "u8", 1, "an ILP64 sgemm, or 0"),
    ("sgemv", "u8", 1, "an LP64 sgemv, or 0 (SciPy's)"),
    ("sgemv64", "u8", 1, "an ILP64 sgemv, or 0"),
    ("dgemm", "u8", 1, "an LP64 dgemm, or 0 (SciPy's)"),
    ("dgemm64", "u8", 1, "an ILP64 dgemm, or 0"),
    ("Xb", "u8", 1, "gathered minibatch input"),
    ("dWs", "u8", 1, "per-thread dW scratch, or 0"),
    ("W", "u8", _L, "weights per layer"),
    ("b", "u8", _L, "biases"),
    ("dW", "u8", _L, "weight gradients"),
    ("db", "u8", _L, "bias gradients"),
    ("Z", "u8", _L, "pre-activations"),
    ("A", "u8", _L, "activations (== Z when A lives in Z's buffer)"),
    ("D", "u8", _L, "dropped-out input of layer l, or 0"),
    ("dZ", "u8", _L, "gradients of Z"),
    ("state", "u8", _P * registry.MAX_STATE,
     "per parameter q, its state arrays at q * FB_STEP_MAXS + j (registry.STEPS order; 0: absent)"),
    ("step_span", "u8", 1, "fb_step_span of fastbp.kernels._c_step (STEP_SPAN)"),
    ("U", "u8", _G, "dropout draws per group"),
    ("code", "i8", 1, "the dense layer whose output h carries the penalty (or -1)"),
    ("sparsity", "i8", 1, "its kind (SPARSITY), 0 for none"),
    ("sparsity_weight", "f8", 1, "its weight"),
    ("sparsity_rho", "f8", 1, "KL: the target mean activation rho"),
    ("rho_parts", "u8", 1, "KL: per thread, h's column sums over its rows (float64, width of h)"),
    ("rho_hat", "u8", 1, "KL: per thread, the minibatch's clipped mean activations (float64)"),
    # data-parallel training (fastbp.distributed): after each step's gradients, one
    # MPI_Allreduce(gsend, grecv, count, datatype, MPI_SUM, comm) by thread 0, then the update
    ("allreduce", "u8", 1, "MPI_Allreduce of the MPI library mpi4py loaded, or 0 (one process)"),
    ("mpi_width", "i8", 1, "bytes of an MPI handle: 4 (MPICH ABI) or 8 (Open MPI, MPI 5 ABI)"),
    ("mpi_datatype", "i8", 1, "the handle of MPI_FLOAT (float32 networks)"),
    ("mpi_op", "i8", 1, "the handle of MPI_SUM"),
    ("mpi_comm", "i8", 1, "the communicator's handle"),
    ("gsend", "u8", 1, "flat gradients of every parameter (W1, b1, W2, ...), this rank's sums"),
    ("grecv", "u8", 1, "the same, summed over the ranks"),
]

# One call of the engine (fb_run): training trains minibatches [mb0, mb1) of the epoch (rows
# order[mb * B ...] of X, Y) after t optimizer steps; prediction runs the rows of px into pout.
CALL_FIELDS = [
    ("X", "u8", 1, "training: the input rows"),
    ("Y", "u8", 1, "their targets, or intp class labels"),
    ("order", "u8", 1, "the epoch's row order (intp)"),
    ("n", "i8", 1, "its rows"),
    ("mb0", "i8", 1, "the first minibatch of this call"),
    ("mb1", "i8", 1, "one past its last"),
    ("t", "i8", 1, "optimizer steps before this call"),
    ("threads", "i8", 1, "threads wanted for training"),
    ("sample_weight", "u8", 1, "the sample weight of every row of X (float64, each > 0), or 0"),
    ("dp_rank", "i8", 1, "data-parallel, replicated rows: this rank, which takes its share of"),
    ("dp_size", "i8", 1, "  each minibatch among dp_size ranks (1: the whole minibatch)"),
    ("dp_rows", "u8", 1, "data-parallel, sharded rows: per minibatch of the call, the rows of all "
                         "ranks (int64), or 0"),
    ("segment", "i8", 1, "a stack inside a larger network's step (fastbp.engine.StackPasses): 1 "
                         "its training forward pass over the n rows of X; its backward pass from "
                         "dL/d(output) in Y, with dL/dX into pout when set, and 2 the gradients "
                         "into dW and db, 3 the optimizer's step t + 1 from them (in the "
                         "scratch), or 4 no parameter gradients; 0: training minibatches"),
    ("px", "u8", 1, "prediction: the input rows"),
    ("pout", "u8", 1, "the output rows (a stack's backward pass: dL/dX, or 0)"),
    ("pn", "i8", 1, "rows"),
    ("pbuf", "u8", 1, "the workspace: pthreads blocks of 2 * pchunk * pwidth entries"),
    ("pwidth", "i8", 1, "the widest hidden layer"),
    ("pchunk", "i8", 1, "rows per pass"),
    ("pthreads", "i8", 1, "threads wanted for prediction"),
    ("pblas", "i8", 1, "whether the BLAS may run its own threads (a one-thread pass)"),
]
# What a call leaves (penalty is read too: the L2 penalty at the weights before it).
RESULT_FIELDS = [
    ("penalty", "f8", 1, "the L2 penalty at the current weights (in: before, out: after)"),
    ("penalty_sum", "f8", 1, "the sum over minibatches of rows x the penalty before its step"),
    ("loss_sum", "f8", 1, "the summed row losses (weighted: times each row's weight)"),
    ("weight_sum", "f8", 1, "the summed weights of the minibatches' rows (their rows, unweighted)"),
    ("threads", "f8", 1, "the threads that ran"),
    ("reduce_error", "f8", 1, "the error code of a failed MPI_Allreduce (the call stopped), or 0"),
    ("grad_norms", "f8", _L, "per dense layer, the sum over minibatches of ||dW||_F"),
]
STRUCTS = (("fb_desc", FIELDS), ("fb_call", CALL_FIELDS), ("fb_result", RESULT_FIELDS))

_C_TYPES = {"i8": "int64_t", "f8": "double", "u8": "uint64_t"}


def c_header():
    """The C header (written by setup.py to fastbp/engine/_layout.h): the limits and the structs
    fb_desc, fb_call and fb_result."""
    lines = ["/* Generated by setup.py from fastbp/engine/layout.py: build output, do not edit. */",
             "#ifndef FASTBP_LAYOUT_H", "#define FASTBP_LAYOUT_H", "#include <stdint.h>",
             f"#define FB_MAXL {MAX_LAYERS}", f"#define FB_MAXT {MAX_THREADS}",
             f"#define FB_MAXG {MAX_GENERATORS}"]
    lines += [f"#define FB_SPARSE_{name.upper()} {code}" for name, code in SPARSITY.items()]
    for struct, fields in STRUCTS:
        lines.append(f"typedef struct {struct} {{")
        for name, kind, count, meaning in fields:
            size = "" if count == 1 else f"[{count}]"
            lines.append(f"    {_C_TYPES[kind]} {name}{size}; /* {meaning} */")
        lines.append(f"}} {struct};")
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def dtype_fields(fields):
    """The NumPy structured dtype's field list of one struct (same layout: 8-byte fields)."""
    return [(name, kind) if count == 1 else (name, kind, (count,)) for name, kind, count, _ in fields]
