"""Copy the Python standard library's own source files (no site-packages) into a demo corpus."""

import shutil
import sys
import sysconfig
from pathlib import Path

target = Path(sys.argv[1])
stdlib = Path(sysconfig.get_paths()["stdlib"])
count = 0
for src in sorted(stdlib.rglob("*.py")):
    rel = src.relative_to(stdlib)
    if rel.parts[0] in ("site-packages", "dist-packages") or "__pycache__" in rel.parts:
        continue
    dst = target / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    count += 1
print(f"demo corpus: {count} files from {stdlib} in {target}/")
