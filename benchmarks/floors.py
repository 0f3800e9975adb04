"""The speed floors the project holds ``fastbp bench``'s four reference nets to (issue 5), and
their verdicts: a benchmark matter, kept out of the user's ``fastbp bench`` output.

``FLOORS``: net -> (max time ratio fastbp/NumPy backend, max time ratio fastbp/PyTorch, min
fraction of the large-GEMM GFLOP/s); None where a floor does not apply.
"""
from fastbp.tools.bench import SCALING_BATCHES

FLOORS = {
    "64-32-10": (1 / 6, 1 / 30, None),
    "784-256-128-10": (0.9, 0.6, None),
    "784-1000-500-250-30-250-500-1000-784": (None, 0.9, 0.8),
    "1024-1024-1024-10": (None, 0.9, 0.8),
}


def judge(result, floors):
    """The issue's floors, met or missed, with the figures they compare."""
    max_numpy, max_torch, min_gemm = floors
    train, predict = result["train"], result.get("predict", {})
    verdicts = {}

    def ratio_floor(table, key, other_prefix, limit, label):
        if limit is None or not table:
            return
        other = next((v for k, v in table.items() if k.startswith(other_prefix)), None)
        if other is None or "fastbp" not in table:
            return
        ratio = table["fastbp"][key] / other[key]
        verdicts[label] = {"ratio": ratio, "limit": limit, "met": ratio <= limit}

    ratio_floor(train, "ms_per_step", "numpy", max_numpy, "train vs numpy")
    ratio_floor(train, "ms_per_step", "torch", max_torch, "train vs torch")
    bulk = result.get("predict_bulk", {})
    ratio_floor(predict, "ms_per_batch", "numpy", max_numpy, "predict (batches) vs numpy")
    ratio_floor(predict, "ms_per_batch", "torch", max_torch, "predict (batches) vs torch")
    ratio_floor(bulk, "ms_per_batch", "numpy", max_numpy, "predict (bulk) vs numpy")
    ratio_floor(bulk, "ms_per_batch", "torch", max_torch, "predict (bulk) vs torch")
    if min_gemm is not None and result["gemm"]:
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

