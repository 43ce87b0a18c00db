"""terarec: distributed training of CTR / ranking models on PyTorch + TorchRec.

Install with ``make setup`` (see README): torch / fbgemm / torchrec are pinned in
``requirements/stack.txt`` and installed by ``requirements/install.py``, because a plain
``pip install torchrec`` pulls the CUDA fbgemm over the CPU build. ``install_requires`` therefore
lists only the dependencies that are safe to resolve with pip.
"""

from pathlib import Path

from setuptools import find_packages, setup


def _requirements(name: str) -> list[str]:
    lines = (Path(__file__).parent / "requirements" / name).read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


setup(
    name="terarec",
    version="0.1.0",
    description="Distributed training of CTR/ranking models (DLRM, DCNv2, Wukong, BST) on TorchRec",
    python_requires=">=3.10",
    packages=find_packages(include=["terarec", "terarec.*"]),
    package_data={"terarec.configs": ["recipes/*.yaml", "sweeps/*.yaml"]},
    install_requires=_requirements("base.txt"),
    extras_require={"test": _requirements("dev.txt"), "baselines": ["lightgbm==4.7.0", "scikit-learn==1.9.1"]},
    entry_points={"console_scripts": ["terarec = terarec.cli:main"]},
)
