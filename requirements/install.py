"""Install terarec's pinned stack into the running interpreter (``make setup`` runs it in ``.venv``).

Why a script and not ``pip install -r``: torchrec's metadata asks for the CUDA ``fbgemm-gpu``
(hundreds of MB), which overwrites the CPU build's files. So the triple in ``stack.txt`` is
installed by hand: torch, then the fbgemm variant that matches the host, then torchrec with
``--no-deps``, and the result is verified by importing all three.

Set ``TERAREC_CUDA=1`` / ``0`` to force the CUDA / CPU variant; by default a working
``nvidia-smi`` means CUDA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def read_pins(path: Path = HERE / "stack.txt") -> dict[str, str]:
    """Return ``{package: version}`` from ``stack.txt`` (``name==version`` lines, ``#`` comments)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def host_has_cuda() -> bool:
    forced = os.environ.get("TERAREC_CUDA")
    if forced is not None:
        return forced == "1"
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi], capture_output=True).returncode == 0


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def installed(name: str) -> bool:
    probe = [sys.executable, "-m", "pip", "show", "-q", name]
    return subprocess.run(probe, capture_output=True).returncode == 0


def main() -> int:
    pins = read_pins()
    cuda = host_has_cuda()
    fbgemm_pkg, other_pkg = ("fbgemm-gpu", "fbgemm-gpu-cpu") if cuda else ("fbgemm-gpu-cpu", "fbgemm-gpu")
    print(f"terarec setup: {'CUDA' if cuda else 'CPU'} host, {fbgemm_pkg}=={pins['fbgemm-gpu']}", flush=True)
    pip("install", "-q", f"torch=={pins['torch']}", "-r", str(HERE / "base.txt"), "-r", str(HERE / "dev.txt"))
    if installed(other_pkg):  # both variants write into fbgemm_gpu/: never keep the wrong one
        pip("uninstall", "-y", "-q", other_pkg)
    pip("install", "-q", "--no-deps", f"{fbgemm_pkg}=={pins['fbgemm-gpu']}")
    pip("install", "-q", "--no-deps", f"torchrec=={pins['torchrec']}")
    pip("install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    check = "import torch, fbgemm_gpu, torchrec, terarec; print('torch', torch.__version__, 'torchrec ok')"
    subprocess.run([sys.executable, "-c", check], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
