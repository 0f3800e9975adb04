"""What fastbp needs to know about the machine it runs on, below every other layer: the BLAS
libraries in the process and their thread pools (``_blas_threads``), and the ELF files of the
compiled modules (``_elf``).  Standard library, NumPy and threadpoolctl only: nothing of fastbp.

Importing this package installs the import hook that checks a compiled module's file before it is
loaded (``_elf.CheckedExtensions``): everything that imports a compiled module imports from here
first.
"""
from fastbp._platform import _elf

_elf.install_import_hook()
