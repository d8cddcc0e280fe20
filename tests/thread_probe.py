"""``python -m thread_probe``: prints this process's thread count and BLAS thread count as JSON.

Run by a forked child in test_blas_pinning.py: a fork keeps only the calling thread, so a count
above 1 there means something (BLAS setting its thread count) started threads again.
"""

import json
import os

import dtrain

print(json.dumps({"threads": len(os.listdir("/proc/self/task")),
                  "blas": dtrain.get_num_threads()}), flush=True)
