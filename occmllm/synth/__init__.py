"""ObMan-style synthetic dataset generator (the library behind ``python -m data_tools.synth``).

    from occmllm.synth import limit_threads; limit_threads()       # first, before numpy loads
    from occmllm.synth.generate import generate
    generate("data/synth", n=1000, seed=0, workers=2)

Modules: generate (the run: workers, resume, manifests), scene / gen2.scene (one sample of generation 1 / 2), objects,
hand, backgrounds, geometry, writer (the files of one sample and of a split), gen2/* (products, skin, rooms, photos,
photometric randomisation).

Each worker process renders in its own thread only: Mesa's llvmpipe would otherwise start one render thread per core
in every worker, and with the workers already filling the cores that costs a third more CPU per sample (measured:
52 -> 40 ms). Set LP_NUM_THREADS yourself to override. Numpy's BLAS and OpenMP are held to one thread per process
for the same reason (a pool of BLAS threads per worker, each as many as the cores, oversubscribes a many-core box).
``limit_threads`` sets these (where not set already); it must run before numpy is imported to hold BLAS.
"""

import os


def limit_threads() -> None:
    """One render thread and one BLAS/OpenMP thread per process, unless the environment says otherwise."""
    os.environ.setdefault("LP_NUM_THREADS", "0")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
