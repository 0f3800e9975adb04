"""The speed floors the project holds ``fastbp bench``'s tables to (issues 5 and 12), and their
verdicts: a benchmark matter, kept out of the user's ``fastbp bench`` output.

``FLOORS``: reference net -> (max time ratio fastbp/NumPy backend, max time ratio fastbp/PyTorch,
min fraction of the large-GEMM GFLOP/s, max time ratio fastbp/JAX lax.scan), for SGD and Adam
alike; None where a floor does not apply.  ``OTHER_FLOORS``: table -> its judge (the one-row
serving, generative and float64 tables).
"""
from fastbp.tools.bench import SCALING_BATCHES

FLOORS = {
    "64-32-10": (1 / 6, 1 / 30, None, 0.7),
    "784-256-128-10": (0.9, 0.6, None, 0.7),
    "784-1000-500-250-30-250-500-1000-784": (None, 0.9, 0.9, 0.7),
    "1024-1024-1024-10": (None, 0.9, 0.9, 0.7),
}


def _ratio(table, key, ours, other_prefix, limit, label, verdicts):
    """``verdicts[label]``: ``table[ours][key]`` over the first row named ``other_prefix...``,
    at most ``limit`` (nothing when either row is missing)."""
    other = next((v for k, v in table.items() if k.startswith(other_prefix)), None)
    if limit is None or other is None or ours not in table:
        return
    ratio = table[ours][key] / other[key]
    verdicts[label] = {"ratio": ratio, "limit": limit, "met": ratio <= limit}


def judge(result, floors):
    """The floors of one training net, met or missed, with the figures they compare."""
    max_numpy, max_torch, min_gemm, max_jax = floors
    train, predict = result["train"], result.get("predict", {})
    bulk = result.get("predict_bulk", {})
    verdicts = {}
    for table, key, what in ((train, "ms_per_step", "train"),
                             (predict, "ms_per_batch", "predict (batches)"),
                             (bulk, "ms_per_batch", "predict (bulk)")):
        _ratio(table, key, "fastbp", "numpy", max_numpy, f"{what} vs numpy", verdicts)
        _ratio(table, key, "fastbp", "torch", max_torch, f"{what} vs torch", verdicts)
    _ratio(train, "ms_per_step", "fastbp", "jax scan", max_jax, "train vs JAX lax.scan", verdicts)
    if min_gemm is not None and result["gemm"] and "fastbp" in train:
        reference = result["gemm"].get("numpy.matmul") or next(iter(result["gemm"].values()))
        fraction = train["fastbp"]["gflops"] / reference["gflops"]
        verdicts["train GFLOP/s vs large GEMM"] = {"ratio": fraction, "limit": min_gemm,
                                                    "met": fraction >= min_gemm}
        for table, label in ((predict, "batches"), (bulk, "bulk")):
            if table:
                fraction = table["fastbp"]["gflops"] / reference["gflops"]
                verdicts[f"predict ({label}) GFLOP/s vs large GEMM"] = {
                    "ratio": fraction, "limit": min_gemm, "met": fraction >= min_gemm}
    if "per_sample" in result:
        per = [result["per_sample"][str(b)] for b in SCALING_BATCHES]
        growth = max(per[i] / min(per[:i]) for i in range(1, len(per)))
        verdicts["per-sample time not growing (32..1024)"] = {
            "ratio": growth, "limit": 1.05, "met": growth <= 1.05}
    return verdicts


def judge_serving(result):
    """Issue 12 item 2: predict_proba of one row at most ONNX Runtime's time (one thread), the
    engine at one row no slower than NumPy's ``X @ W + b`` chain."""
    verdicts, table, net = {}, result["one_row"], result["net"]
    _ratio(table, "us_per_call", "predict_proba", "onnxruntime", 1.0,
           f"{net} predict_proba vs ONNX Runtime", verdicts)
    _ratio(table, "us_per_call", "engine", "numpy by hand", 1.0,
           f"{net} engine vs NumPy by hand", verdicts)
    return verdicts


def judge_generative(result):
    """One epoch of each generative model at most 0.4x the PyTorch loop's."""
    verdicts = {}
    for model, table in result["models"].items():
        _ratio(table, "s_per_epoch", "fastbp", "torch", 0.4, f"{model} epoch vs PyTorch", verdicts)
    return verdicts


def judge_float64(result):
    """The float64 epoch of 784-256-128-10 at most 0.4x scikit-learn's."""
    verdicts = {}
    _ratio(result["epoch"], "s_per_epoch", "fastbp", "sklearn", 0.4,
           "float64 epoch vs scikit-learn", verdicts)
    return verdicts


OTHER_FLOORS = {"serving": judge_serving, "generative": judge_generative,
                "float64": judge_float64}

# Issue 12 item 3: ``checkpoint_segments`` on the hourglass at batch 1024 (bench_checkpoint.py):
# at its leanest setting, at most this fraction of the activation bytes of storing everything
# (``Sequential.buffer_nbytes``) and at most this ratio of its time per step, layer by layer.
CHECKPOINT = {"memory": 0.5, "time": 1.35}
