import urllib.error

import pytest
import torch
from torch import nn

from transforms.nst.families import FAMILIES
from transforms.nst.layers import canonical_layer, layer_names, min_input_side, parameter_sizes
from transforms.nst.vgg import VGGFeatures, WeightsError
from transforms.nst.weights import load_features_state_dict

TORCHVISION = FAMILIES["torchvision"]


def test_layer_names_follow_torchvision_modules() -> None:
    names = layer_names("vgg19")
    assert len(names) == 37 and len(layer_names("vgg16")) == 31
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-3:] == ["conv5_4", "relu5_4", "pool5"]
    assert "relu5_4" not in layer_names("vgg16")


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
def test_the_layer_table_is_torchvisions_features_stack(model: str) -> None:
    # layers.py is a plain table (no torch); it must name torchvision's modules one for one.
    from torchvision import models

    with torch.device("meta"):
        features = getattr(models, model)(weights=None).features
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    assert [kinds[type(module)] for module in features] == [name.rstrip("0123456789_") for name in layer_names(model)]


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
def test_the_parameter_table_is_torchvisions_whole_model(model: str) -> None:
    from torchvision import models

    with torch.device("meta"):
        network = getattr(models, model)(weights=None)
    assert [tensor.numel() for tensor in network.state_dict().values()] == parameter_sizes(model)


def test_a_weights_file_declaring_more_than_the_model_holds_is_refused_before_loading(tmp_path) -> None:
    path = tmp_path / "bomb.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    # Forge the central directory: the tensor's storage now declares 1 GiB (torch would
    # allocate it as declared). Its uncompressed size is at offset 24 of its record.
    data = bytearray(path.read_bytes())
    record = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02"))  # the first central record...
    while not data[record + 46 : record + 46 + int.from_bytes(data[record + 28 : record + 30], "little")].endswith(
        b"data/0"
    ):
        record = data.index(b"PK\x01\x02", record + 4)  # ...and on to the storage's
    data[record + 24 : record + 28] = (1 << 30).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(
        WeightsError, match=r"bomb.pth: declares \d+ bytes .*'bomb/data/0' 1073741824.*refused before loading"
    ):
        load_features_state_dict("vgg19", str(path))


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("block5_conv2", "relu5_2"), ("block1_conv1", "relu1_1"), ("block3_pool", "pool3"), ("RELU4_2", "relu4_2")],
)
def test_keras_aliases(alias: str, canonical: str) -> None:
    assert canonical_layer("vgg19", alias) == canonical


@pytest.mark.parametrize(("model", "layer"), [("vgg19", "relu6_1"), ("vgg16", "relu5_4"), ("vgg19", "fc7")])
def test_unknown_layer_lists_valid_names(model: str, layer: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown layer '{layer}' for {model}: valid names are conv1_1, relu1_1"):
        canonical_layer(model, layer)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg11': choose one of vgg16, vgg19"):
        layer_names("vgg11")


def test_min_side_counts_pools_before_deepest_layer() -> None:
    assert min_input_side("vgg19", ["relu1_1"]) == 1
    assert min_input_side("vgg19", ["relu4_2", "relu5_1"]) == 16
    assert min_input_side("vgg19", ["pool5"]) == 32


def test_network_is_cut_frozen_and_returns_requested_layers(weights_file) -> None:
    state = load_features_state_dict("vgg19", weights_file("vgg19"))
    network = VGGFeatures("vgg19", ["relu2_1", "block1_conv1", "conv2_1"], state, TORCHVISION)
    assert network.deepest_layer == "relu2_1"
    assert len(network.stack) == layer_names("vgg19").index("relu2_1") + 1
    assert not any(p.requires_grad for p in network.parameters()) and not network.training
    out = network(torch.rand(1, 3, 32, 32))
    assert set(out) == {"relu1_1", "conv2_1", "relu2_1"}
    # the conv output survives: ReLU is not applied in place on it
    assert (out["conv2_1"] < 0).any()
    torch.testing.assert_close(out["relu2_1"], out["conv2_1"].clamp(min=0))


def test_avg_pooling_replaces_max_pooling(weights_file) -> None:
    state = load_features_state_dict("vgg16", weights_file("vgg16"))
    network = VGGFeatures("vgg16", ["relu3_1"], state, TORCHVISION, pooling="avg")
    kinds = {type(m) for m in network.stack}
    assert nn.AvgPool2d in kinds and nn.MaxPool2d not in kinds


def test_full_model_and_features_only_files_load_the_same(full_vgg16_weights, tmp_path) -> None:
    full = torch.load(full_vgg16_weights, weights_only=True)
    assert any(k.startswith("classifier.") for k in full)
    features_only = tmp_path / "features.pth"
    torch.save({k: v for k, v in full.items() if k.startswith("features.")}, features_only)
    a = load_features_state_dict("vgg16", full_vgg16_weights)
    b = load_features_state_dict("vgg16", str(features_only))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(a["0.weight"], full["features.0.weight"])


def test_weights_file_with_wrong_keys(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=r"resnet.pth: not a torchvision VGG state dict \(conv1.weight"):
        load_features_state_dict("vgg19", str(path))


def test_weights_file_of_other_depth(weights_file) -> None:
    state = load_features_state_dict("vgg16", weights_file("vgg16"))
    with pytest.raises(WeightsError, match=r"weights do not fit vgg19: (missing|features.* has shape)"):
        VGGFeatures("vgg19", ["relu5_4"], state, TORCHVISION)


def test_weights_file_with_wrong_shape(weights_file) -> None:
    state = dict(load_features_state_dict("vgg19", weights_file("vgg19")))
    state["2.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(WeightsError, match=r"features.2.weight has shape \(64, 64, 5, 5\), expected \(64, 64, 3, 3\)"):
        VGGFeatures("vgg19", ["relu2_1"], state, TORCHVISION)


def test_weights_not_a_file_or_not_a_state_dict(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"weights '.*missing.pth': no such file"):
        load_features_state_dict("vgg19", str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match=r"weights .*junk.pth: cannot be read as a state dict"):
        load_features_state_dict("vgg19", str(junk))


def test_imagenet_download_failure_explains_how_to_pass_a_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torchvision must download

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(
        WeightsError,
        match=r"could not download the torchvision vgg19 ImageNet weights .*--weights caffe.*--weights /path/to/vgg19-dcbb9e9d.pth --weights_family torchvision",
    ):
        load_features_state_dict("vgg19", "imagenet")
