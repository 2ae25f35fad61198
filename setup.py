from setuptools import setup

# `kernels/` sits at the top of the repository (the design's layout) but installs as `fastrnn.kernels`.
setup(
    name="fastrnn",
    version="0.1.0",
    description="Fused Triton kernels for the Elman RNN and LSTM, as a drop-in for torch.nn",
    packages=["fastrnn", "fastrnn.testing", "fastrnn.kernels"],
    package_dir={"fastrnn": "fastrnn", "fastrnn.kernels": "kernels"},
    entry_points={"pytest11": ["fastrnn.testing.plugin = fastrnn.testing.plugin"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4,<3", "triton>=3.2"],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "numpy", "expecttest", "scikit-learn"],
        "bench": ["pytest-benchmark>=4", "tqdm", "matplotlib>=3.7", "numpy"],
    },
)
