"""jaxvit: lightweight Vision Transformers in JAX / Flax."""

from setuptools import find_packages, setup

DATA = ["tensorflow-cpu", "tensorflow-datasets", "importlib_resources", "tensorboard", "scikit-learn"]
PARITY = ["torch==2.14.1", "torchvision==0.29.1", "timm"]
TEST = ["pytest", "pytest-xdist"]
PLOT = ["matplotlib"]

setup(
    name="jaxvit",
    version="0.1.0",
    description="Lightweight Vision Transformers in JAX/Flax: components, dynamic networks, distillation",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["jaxvit", "jaxvit.*"]),
    install_requires=["jax", "flax", "optax", "orbax-checkpoint", "ml-collections", "clu", "numpy", "safetensors"],
    extras_require={"data": DATA, "parity": PARITY, "plot": PLOT, "dev": DATA + PARITY + PLOT + TEST},
    entry_points={"console_scripts": ["jaxvit-convert=jaxvit.convert.__main__:main",
                                      "jaxvit-bench=jaxvit.bench.__main__:main",
                                      "jaxvit=jaxvit.main:run"]},
)
