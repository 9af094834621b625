"""How far the embedded (8-bit k-means quantized) Caffe VGG19 is from full precision.

    python -m benchmarks.quantization                                # estimate, no file needed
    python -m benchmarks.quantization --reference vgg19-d01eb7cb.pth # direct comparison

Without a full-precision file, the original weights are unknown, but each lies in its k-means
cell (closer to its centre than to the neighbouring centres). The estimate draws weights
uniformly inside their cells (a network as consistent with the codes as the original is), three
times, and reports how much that moves the activations of a real photo: the spread that
quantization can hide. With ``--reference`` (a Caffe VGG19 in torchvision's key layout, such as
the common ``vgg19-d01eb7cb.pth`` conversion), it compares with the real thing instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from transforms.nst.families import FAMILIES
from transforms.nst.images import fit_longest_side, image_to_tensor
from transforms.nst.layers import conv_indices
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import load_features_state_dict

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")
PHOTO = Path(__file__).resolve().parent.parent / "examples" / "images" / "cat.jpg"


def cell_resample(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each weight moved to a uniform draw inside its k-means cell (between the midpoints)."""
    centres = weight.unique()  # sorted
    midpoints = (centres[1:] + centres[:-1]) / 2
    # A tail cell is as wide on its open side as on its closed one.
    low = torch.cat([centres[:1] - (midpoints[:1] - centres[:1]), midpoints])
    high = torch.cat([midpoints, centres[-1:] + (centres[-1:] - midpoints[-1:])])
    index = torch.searchsorted(centres, weight)
    u = torch.rand(weight.shape, generator=generator)
    return low[index] + u * (high[index] - low[index])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="a full-precision Caffe VGG19 state dict (torchvision layout)")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    family = FAMILIES["caffe"]
    quantized = load_features_state_dict("vgg19", "caffe")
    photo = image_to_tensor(fit_longest_side(Image.open(PHOTO).convert("RGB"), args.size)) * family.pixel_scale
    with torch.no_grad():
        base = VGGFeatures("vgg19", LAYERS, quantized, family)(photo)

    print(f"# embedded Caffe VGG19: {PHOTO.name} at {args.size} px")
    print("| layer | distinct values | estimated RMS weight error / weight std |")
    print("|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for name, index in conv_indices("vgg19").items():
        weight = quantized[f"{index}.weight"]
        errors = [(cell_resample(weight, generator) - weight).pow(2).mean().sqrt() for _ in range(3)]
        print(f"| {name} | {weight.unique().numel()} | {(sum(errors) / 3 / weight.std()).item():.4f} |")

    if args.reference:
        others = {"full precision": load_features_state_dict("vgg19", args.reference)}
    else:
        others = {}
        for draw in range(3):
            others[f"cell draw {draw + 1}"] = {
                key: cell_resample(value, generator) if key.endswith("weight") else value
                for key, value in quantized.items()
            }
    print()
    print("| activations vs quantized | " + " | ".join(LAYERS) + " |")
    print("|---|" + "---|" * len(LAYERS))
    for label, state in others.items():
        with torch.no_grad():
            features = VGGFeatures("vgg19", LAYERS, state, family)(photo)
        row = " | ".join(f"{relative_error(features[k], base[k]):.4f}" for k in LAYERS)
        print(f"| {label} | {row} |")


if __name__ == "__main__":
    main()
