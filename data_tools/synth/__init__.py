"""ObMan-style synthetic dataset generator: ``python -m data_tools.synth --help``.

Each worker process renders in its own thread only: Mesa's llvmpipe would otherwise start one render thread per core
in every worker, and with the workers already filling the cores that costs a third more CPU per sample (measured:
52 -> 40 ms). Set LP_NUM_THREADS yourself to override. Numpy's BLAS and OpenMP are held to one thread per process
for the same reason (a pool of BLAS threads per worker, each as many as the cores, oversubscribes a many-core box).
"""

import os

os.environ.setdefault("LP_NUM_THREADS", "0")
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
