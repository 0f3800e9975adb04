"""``fastbp predict MODEL.npz DATA.csv [-o OUT.csv]``: a saved classifier's or regressor's
predictions, one per data row, as a CSV (to stdout, or ``-o``)."""
import csv
import os
import sys
import tempfile

from fastbp.cli._jobs import check_output_path

USAGE = "fastbp predict MODEL.npz DATA [-o OUT.csv] [--target NAME|N] [--impute mean|median]"

DESCRIPTION = """Predict with a model saved by 'fastbp train --save' (or by model.save in Python).

DATA is read as 'fastbp train --data' reads it (CSV with any delimiter and an optional header, or
.npy).  It may hold the target column too: it is left out when the file has one column more than
the model's features (the column --target names, else the text column, else the last).  The
output is a CSV with a header and one row per data row: 'prediction' (a class label, or the
predicted number; 'prediction_1', 'prediction_2', ... for several outputs)."""

EPILOG = """examples:
  fastbp predict iris.npz new-flowers.csv                 predictions to the terminal
  fastbp predict houses.npz houses.csv --target price -o predicted.csv"""

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.npz", help="a model saved by fastbp")
    parser.add_argument("data", metavar="DATA", help="CSV or .npy file, one example per row")
    parser.add_argument("-o", "--output", metavar="OUT.csv",
                        help="write the predictions here (default: standard output)")
    parser.add_argument("--target", metavar="NAME|N",
                        help="a column of DATA to leave out (the target, if the file has it)")
    parser.add_argument("--impute", choices=("mean", "median"),
                        help="fill missing feature values with the column's mean or median")


def _features(args, n_features):
    """The feature matrix of ``args.data`` for a model of ``n_features`` inputs."""
    from fastbp.cli._table import features, read_table

    table = read_table(args.data, args.target, has_target=False, n_features=n_features)
    if table.notes:
        print(f"fastbp predict: {args.data}: {'; '.join(table.notes)}", file=sys.stderr)
    if table.X.shape[1] != n_features:
        raise ValueError(f"{args.data}: {table.X.shape[1]} feature columns, but the model takes "
                         f"{n_features}")
    return features(table, args.data, args.impute)


def run(args):
    from fastbp.models.mlp import MLPClassifier, MLPRegressor
    from fastbp.models.persist import load

    if args.output:
        check_output_path(args.output, "--output")
    if not os.path.isfile(args.model):
        raise ValueError(f"{args.model}: no such file")
    model = load(args.model)
    if not isinstance(model, (MLPClassifier, MLPRegressor)):
        raise ValueError(f"{args.model}: a saved {type(model).__name__}; fastbp predict serves "
                         "MLPClassifier and MLPRegressor models")
    predictions = model.predict(_features(args, model.n_features_in_))
    columns = (["prediction"] if predictions.ndim == 1 else
               [f"prediction_{j + 1}" for j in range(predictions.shape[1])])
    rows = predictions.reshape(len(predictions), -1).tolist()
    if args.output:
        # a temporary file beside it, renamed over it when whole: an old file is never half
        # overwritten
        folder = os.path.dirname(os.path.abspath(args.output))
        fd, temporary = tempfile.mkstemp(prefix=".fastbp-predict-", suffix=".csv", dir=folder)
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                _write(handle, columns, rows)
            os.replace(temporary, args.output)
        except BaseException:
            os.unlink(temporary)
            raise
        print(f"{len(rows)} predictions written to {args.output}", file=sys.stderr)
    else:
        _write(sys.stdout, columns, rows)
    return 0


def _write(handle, columns, rows):
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[f"{v:.9g}" if isinstance(v, float) else v for v in row] for row in rows])
