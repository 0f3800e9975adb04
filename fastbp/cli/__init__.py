"""The ``fastbp`` command: ``train`` (the main job), ``bench`` (speed) and ``size`` (artifact sizes).

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when chosen (so ``fastbp size`` never imports a compiled kernel).
"""
import argparse
import importlib
import sys

COMMANDS = {
    "train": ("fastbp.cli.train_job", "train a network on the digits data (default) or your own"),
    "bench": ("fastbp.tools.bench", "time training steps against NumPy, PyTorch and scikit-learn"),
    "size": ("fastbp.tools.size_report", "report the sizes of the compiled .so files"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="fastbp", description=__doc__.splitlines()[0])
        parser.add_argument("command", choices=list(COMMANDS),
                            help="; ".join(f"{name}: {text}" for name, (_, text) in COMMANDS.items()))
        parser.parse_args(argv[:1])  # prints usage and exits
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"fastbp {argv[0]}", description=help_text)
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
