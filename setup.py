from setuptools import setup

# `kernels/` sits at the top of the repository (the design's layout) but installs as `fastrnn.kernels`.
setup(
    name="fastrnn",
    version="0.1.0",
    description="Fused Triton kernels for the Elman RNN, LSTM and GRU, as a drop-in for torch.nn",
    packages=["fastrnn", "fastrnn.testing", "fastrnn.kernels"],
    package_dir={"fastrnn": "fastrnn", "fastrnn.kernels": "kernels"},
    entry_points={"pytest11": ["fastrnn.testing.plugin = fastrnn.testing.plugin"]},
    python_requires=">=3.10",
    # Only what CI tests (.ci/run): torch 2.13.0 with triton 3.9, torch 2.14.1 with the triton 3.8 it pins.
    install_requires=["torch>=2.13,<2.15", "triton>=3.8,<3.10"],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "pytest-benchmark>=4", "numpy", "expecttest", "scikit-learn"],
        "bench": ["pytest-benchmark>=4", "tqdm", "matplotlib>=3.7", "numpy"],
    },
)
