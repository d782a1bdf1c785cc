"""ObMan-style synthetic dataset generator: ``python -m data_tools.synth --help``.

Each worker process renders in its own thread only: Mesa's llvmpipe would otherwise start one render thread per core
in every worker, and with the workers already filling the cores that costs a third more CPU per sample (measured:
52 -> 40 ms). Set LP_NUM_THREADS yourself to override.
"""

import os

os.environ.setdefault("LP_NUM_THREADS", "0")
