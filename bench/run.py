"""Run every ``bench_*.py`` in this folder in turn (each prints its own table).

python bench/run.py            # all
python bench/run.py relu gemm  # a subset, by name
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
wanted = sys.argv[1:]
status = 0
for path in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    name = os.path.basename(path)[6:-3]
    if wanted and name not in wanted:
        continue
    print(f"\n===== {name} =====", flush=True)
    status |= subprocess.call([sys.executable, path])
sys.exit(status)
