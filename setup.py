from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

EXTRAS = {
    "test": ["pytest>=7", "hypothesis>=6", "scipy>=1.10"],
    "plot": ["matplotlib>=3.7"],
    "bench": ["entmax==1.3"],
    # Installing this extra needs `pip install --no-build-isolation` (it compiles extensions against
    # the installed torch); see README "Install".  The import name stays `fairseq`.
    # tokenisers pinned exactly: the Multi30k recipe's subwords must be reproducible
    "fairseq": ["fairseq-fixed==0.12.3.1", "sacrebleu>=2.3,<3", "sentencepiece==0.2.3", "sacremoses==0.2.0"],
    "rationale": ["tqdm>=4.60", "matplotlib>=3.7"],
    # Triton GPU kernels (hardkuma_attention/triton_kernels.py); tested with 3.9 (CPU interpreter)
    "gpu": ["triton>=3.2,<3.10"],
    # captum: only the test that checks our occlusion scores against captum's Occlusion
    # Hugging Face backend (hardkuma_attention.integrations.transformers), tested with 5.24.0;
    # accelerate: transformers.Trainer (HardKumaTrainer) needs it
    "transformers": ["transformers>=5.24,<5.25", "accelerate>=1.1,<2"],
    "explain": ["tqdm>=4.60", "matplotlib>=3.7", "scikit-learn>=1.3", "captum>=0.8,<0.10"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="hardkuma-attention",
    version="0.1.0",
    description="HardKuma (rectified stretched Kumaraswamy) gates and sparse attention for PyTorch and fairseq",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # fairseq_plugins: the fairseq tasks/models/criteria (needs the "fairseq" extra); installed so that
    # `fairseq-train --user-dir $(python -c "import fairseq_plugins, os; print(os.path.dirname(
    # fairseq_plugins.__file__))")` points at the installed package (fairseq imports only its .py files)
    packages=find_packages(include=["hardkuma_attention", "hardkuma_attention.*", "fairseq_plugins", "fairseq_plugins.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.1"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "hardkuma-rationale=hardkuma_attention.cli:main",
        ]
    },
    license="MIT",
)
