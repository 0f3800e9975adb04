"""Run under mpiexec by tests/test_distributed.py: rank 1 passes bad input, rank 0 good input; the
whole job must end with rank 1's error (never wait for it)."""
import numpy as np

import fastbp
from fastbp.distributed import data_parallel
from mpi4py import MPI

X, y = fastbp.load_digits()
if MPI.COMM_WORLD.rank == 1:
    X = X.copy()
    X[3, 5] = np.nan  # a ValueError in this rank's input checks, before any collective
with data_parallel():
    fastbp.MLPClassifier((8,), max_iter=50, random_state=0).fit(X, y)
