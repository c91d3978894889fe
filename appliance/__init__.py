"""The DICOM ingest appliance (README.md)."""

import os as _os

# numpy's OpenBLAS starts one spinning thread per CPU at import; nothing here does linear
# algebra, and on 2 cores those threads showed up in perf (blas_thread_server) next to ingest.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
