"""The ``fastbp`` command: ``train``, ``predict``, ``bench`` and ``size``, one argparse sub-parser
each.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported (so ``fastbp size`` never imports a compiled kernel).  A user's
mistake (a ValueError or OSError from a job, a bad option) ends in one line on stderr and exit
status 2, never a traceback; Ctrl-C ends with status 130.
"""
import argparse
import importlib
import os
import sys

from fastbp._version import __version__

COMMANDS = {
    "train": ("fastbp.cli.train_job", "train a network on the bundled digits or your own CSV"),
    "predict": ("fastbp.cli.predict_job", "predict with a saved model, one row per CSV row"),
    "bench": ("fastbp.tools.bench", "time fastbp against NumPy, PyTorch, scikit-learn, JAX and ONNX Runtime"),
    "size": ("fastbp.tools.size_report", "report the sizes of the compiled .so files"),
}

EXAMPLES = """examples:
  fastbp train                            digits classifier: compiled vs NumPy backend
  fastbp train --data iris.csv --target species --save iris.npz
  fastbp predict iris.npz new.csv -o predictions.csv
  fastbp train --model vae --plot samples.png
  fastbp <command> --help                 the options of one command"""


def _parser(chosen):
    parser = argparse.ArgumentParser(
        prog="fastbp", description="Fast backpropagation for dense networks on the CPU.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name) if name == chosen else None
        sub = commands.add_parser(
            name, help=help_text, usage=getattr(module, "USAGE", None), description=getattr(module, "DESCRIPTION", help_text),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        if module is not None:
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


# what an MPI launcher (mpiexec of MPICH or Open MPI, MVAPICH, srun with PMI) tells its processes
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_ranks():
    """How many processes an MPI launcher started this one among (1: not under MPI)."""
    for name in MPI_SIZE_VARIABLES:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def main(argv=None):
    """Run the ``fastbp`` command on ``argv`` (default ``sys.argv[1:]``); the exit status.

    Started by an MPI launcher on several processes (``mpiexec -n 4 fastbp train ...``), ``train``
    trains data-parallel (``fastbp.distributed``): rank 0 prints, plots and saves; any rank's error
    ends the whole job (``MPI_Abort``) with its message, never a hang."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    args = _parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    if args.command != "train" or launched_ranks() == 1:
        return _run(args)
    from fastbp.distributed import data_parallel
    with data_parallel() as parallel:
        if parallel.rank == 0:
            print(f"data-parallel over {parallel.size} MPI ranks (fastbp.distributed)")
        else:  # one voice: the others train silently
            sys.stdout = open(os.devnull, "w")
            args.plot = None
        status = _run(args)
        if status != 0:
            sys.stderr.flush()
            parallel.comm.Abort(status)
    return status


def _run(args):
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader of our output left (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as error:
        print(f"fastbp {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nfastbp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
