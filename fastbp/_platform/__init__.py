"""What fastbp needs to know about the machine it runs on, below every other layer: the BLAS
libraries in the process and their thread pools (``_blas_threads``), and the ELF files of the
compiled modules (``_elf``).  Standard library, NumPy and threadpoolctl only: nothing of fastbp.
"""
