"""Fail when a source file passes the hard size caps of STYLE.md (rule 16).

Python modules: 500 lines. C++/CUDA files: 400 lines. Run from the repository root.
"""

import sys
from pathlib import Path

CAPS = {".py": 500, ".cpp": 400, ".cu": 400, ".h": 400, ".cuh": 400}
ROOTS = ("pymtl", "csrc", "plugins", "bench")

too_big = []
for root in ROOTS:
    for path in sorted(Path(root).rglob("*")):
        cap = CAPS.get(path.suffix)
        if cap is not None and path.is_file():
            n = sum(1 for _ in path.open(encoding="utf-8"))
            if n > cap:
                too_big.append(f"{path}: {n} lines (cap {cap})")
if too_big:
    sys.exit("files over the size caps:\n  " + "\n  ".join(too_big))
print(f"size caps: ok ({', '.join(ROOTS)})")
