"""PyTorch mine-classifier architectures (training only: inference runs the exported ONNX graphs).

Every network takes rendered model input (0..255 floats, see :mod:`minewatch.bands`) channels-first
``N×C×48×48`` and returns one logit per patch ``N×1``. Normalisation to roughly zero mean and unit
variance is a fixed affine layer inside the network so the exported graphs take the same rendered
values the chips hold.

Two families:

``cnn100k``
    The 2024 reference design (Earth Genome, Amazon Mining Watch, CNN100k): three blocks of three
    3×3 'same' convolutions with 32 filters, max-pools 2, 2, 3, then dense 64-64-32-1 with dropout.
    About 114k parameters. 'Same' padding makes a patch's score depend on where the patch edge is,
    so it has no fully-convolutional (tile-at-once) form: it is scored patch by patch.

``mwnet*`` (ours)
    Valid-padding convolutions, BatchNorm (an affine map in eval mode), two 2×2 max-pools (total
    stride 4, which divides the 24 px half-patch step) and a head whose "dense" layers are a 5×5 and
    1×1 convolutions. On a 48×48 patch the trunk ends at 1×1; on a larger raster the same weights
    produce a map whose cell (i, j) is exactly the patch with top-left pixel (4i, 4j), so a whole
    tile is scored at once with numbers identical to cutting the patches. Nothing spans more than
    the 48 px receptive field (no global pooling, no padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PATCH_PX = 48

# Per-channel mean/std of the rendered L1C RGB chips (B4, B3, B2), measured on the 11,993 shared
# chips; other band counts use a neutral 127.5/64. A fixed constant, not a learned layer: the
# exported graph must not depend on the training run's data statistics beyond what the card states.
RGB_MEAN = (72.5, 79.8, 79.6)
RGB_STD = (44.8, 33.1, 31.2)


class Normalize(nn.Module):
    """Fixed per-channel affine map from rendered 0..255 values to ~unit scale."""

    def __init__(self, in_bands: int) -> None:
        super().__init__()
        mean = RGB_MEAN if in_bands == 3 else (127.5,) * in_bands
        std = RGB_STD if in_bands == 3 else (64.0,) * in_bands
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class CNN100k(nn.Module):
    """The reference ~100k-parameter CNN (patch scoring only; 'same' padding)."""

    fcn_stride: int | None = None

    def __init__(self, in_bands: int = 3, filters: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize(in_bands)]
        c = in_bands
        for pool in (2, 2, 3):
            for _ in range(3):
                layers += [nn.Conv2d(c, filters, 3, padding=1), nn.ReLU(inplace=True)]
                c = filters
            layers.append(nn.MaxPool2d(pool))
        self.features = nn.Sequential(*layers)
        side = PATCH_PX // 12
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters * side * side, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(64, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(64, 32),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(32, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _StridedHead:
    """Evaluate the head only where it is needed.

    On a raster the trunk yields features on a 4 px lattice, but detection reads patches on the
    24 px step lattice only. The head's first (k×k "dense") convolution is by far its costliest
    layer; run with stride ``head_stride`` it computes exactly the lattice cells that are kept
    (same weights, a subset of the same outputs), e.g. 6× fewer cells per axis for a 24 px output.
    """

    features: nn.Sequential
    head: nn.Sequential

    def forward_strided(self, x: torch.Tensor, head_stride: int = 1) -> torch.Tensor:
        f = self.features(x)
        conv = self.head[0]
        assert isinstance(conv, nn.Conv2d)
        z = nn.functional.conv2d(f, conv.weight, conv.bias, stride=head_stride)
        for layer in list(self.head)[1:]:
            z = layer(z)
        return z


def _conv_bn(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_head(cin: int, head: int, k: int, dropout: float) -> nn.Sequential:
    """The dense head as convolutions: a k×k conv over the remaining window, then 1×1 → one logit."""
    return nn.Sequential(
        nn.Conv2d(cin, head, k, bias=False),
        nn.BatchNorm2d(head),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(head, 1, 1),
    )


class MWNetFCN(_StridedHead, nn.Module):
    """Our fully-convolutional classifier: input any H×W ≥ 48, output logit map N×1×h×w.

    Geometry for a 48 px patch: 3×3 valid convs 48→46→44, pool →22, 20→18, pool →9, 7→5, then the
    5×5 "dense" head →1. Output stride 4 (``fcn_stride``).
    """

    fcn_stride: int = 4

    def __init__(self, in_bands: int = 3, widths: tuple[int, int, int] = (32, 64, 128), head: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            Normalize(in_bands),
            *_conv_bn(in_bands, c1),
            *_conv_bn(c1, c1),
            nn.MaxPool2d(2),
            *_conv_bn(c1, c2),
            *_conv_bn(c2, c2),
            nn.MaxPool2d(2),
            *_conv_bn(c2, c3),
            *_conv_bn(c3, c3),
        )
        self.head = _conv_head(c3, head, 5, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MWNetS2D(_StridedHead, nn.Module):
    """Our second design: a 2×2 stride-2 "space-to-depth" stem, then wide 3×3 valid convs.

    The full-resolution 3×3 convolutions dominate the cost of ``MWNetFCN``; a learned 2×2/2 stem
    keeps every pixel (12 inputs → ``c0`` ≥ 12 channels, lossless) and lets the trunk be twice as
    wide for the same compute. Geometry for 48 px: stem →24, 3×3 22→20, pool →10, 8→6, 6×6 head →1.
    Output stride 4 (stem 2 × pool 2), dividing the 24 px step; patches at multiples of 4 px see
    exactly aligned stem cells and pooling windows, so the FCN form is exact.
    """

    fcn_stride: int = 4

    def __init__(self, in_bands: int = 3, widths: tuple[int, int, int] = (48, 64, 128), head: int = 192, dropout: float = 0.2) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.features = nn.Sequential(
            Normalize(in_bands),
            nn.Conv2d(in_bands, c0, 2, stride=2, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
            *_conv_bn(c0, c1),
            *_conv_bn(c1, c1),
            nn.MaxPool2d(2),
            *_conv_bn(c1, c2),
            *_conv_bn(c2, c2),
        )
        self.head = _conv_head(c2, head, 6, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PatchClassifier(nn.Module):
    """Wrap a fully-convolutional net so a 48×48 patch gives one logit N×1."""

    def __init__(self, fcn: MWNetFCN | MWNetS2D) -> None:
        super().__init__()
        self.fcn = fcn
        self.fcn_stride = fcn.fcn_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcn(x).flatten(1)


@dataclass(frozen=True)
class ArchInfo:
    name: str
    description: str


ARCHS: dict[str, ArchInfo] = {
    "cnn100k": ArchInfo("cnn100k", "2024 reference CNN: 3×(3 conv3×3 'same', 32 filters), pools 2,2,3, dense 64-64-32-1 (patch scoring only)"),
    "mwnet-tiny": ArchInfo("mwnet-tiny", "fully-convolutional valid-padding CNN, widths 8-16-32, head 32 (tests)"),
    "mwnet-s": ArchInfo("mwnet-s", "fully-convolutional valid-padding CNN, widths 24-48-96, head 96, stride 4"),
    "mwnet": ArchInfo("mwnet", "fully-convolutional valid-padding CNN, widths 32-64-128, head 128, stride 4"),
    "mwnet-w": ArchInfo("mwnet-w", "fully-convolutional valid-padding CNN, widths 48-96-192, head 192, stride 4"),
    "mwnet-s2d": ArchInfo("mwnet-s2d", "fully-convolutional: 2×2/2 space-to-depth stem 48, 3×3 valid convs 64-64 / 128-128, 6×6 head 192, stride 4"),
    "mwnet-s2d-w": ArchInfo("mwnet-s2d-w", "as mwnet-s2d, wider: stem 64, convs 96-96 / 192-192, head 256"),
}


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation for ReLU networks, zero biases.

    PyTorch's default (uniform, a=√5) shrinks the signal ~2.5× per ReLU layer, so a 9-conv network
    without BatchNorm (cnn100k) starts with vanishing activations; He init keeps their scale (He et
    al. 2015), like the Keras reference's Glorot init roughly does.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build(name: str, in_bands: int = 3) -> nn.Module:
    """A freshly initialised network by architecture name (see :data:`ARCHS`)."""
    if name == "cnn100k":
        return init_weights(CNN100k(in_bands))
    if name == "mwnet-s2d":
        return init_weights(PatchClassifier(MWNetS2D(in_bands)))
    if name == "mwnet-s2d-w":
        return init_weights(PatchClassifier(MWNetS2D(in_bands, (64, 96, 192), 256)))
    sizes = {
        "mwnet-tiny": ((8, 16, 32), 32),
        "mwnet-s": ((24, 48, 96), 96),
        "mwnet": ((32, 64, 128), 128),
        "mwnet-w": ((48, 96, 192), 192),
    }
    if name not in sizes:
        raise KeyError(name)
    widths, head = sizes[name]
    return init_weights(PatchClassifier(MWNetFCN(in_bands, widths, head)))


def fcn_of(model: nn.Module) -> nn.Module | None:
    """The fully-convolutional form of ``model`` (same weights), or None when it has none."""
    if isinstance(model, PatchClassifier):
        return model.fcn
    return None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
