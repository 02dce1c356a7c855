"""Model packages (ONNX graphs + a model card), importers and the packaged default model.

Inference needs only ONNX Runtime; PyTorch architectures live in ``minewatch.models.arch`` and are
imported only by training code.
"""

from minewatch.models.package import ModelCard, ModelPackage, load_package, save_package

__all__ = ["ModelCard", "ModelPackage", "load_package", "save_package"]
