import json
import re

import pytest

from transforms.limits import Limits
from transforms.manifest import manifest_format, parse_rows, validate_rows
from transforms.names import safe_id
from transforms.nst.config import StyleConfig
from transforms.records import Failure, Pair


def pairs_from_csv(text: str) -> list[Pair | Failure]:
    rows = list(parse_rows(text.encode(), "m.csv", "csv"))
    return list(validate_rows(rows, "gs://bucket/set", StyleConfig(weights="random"), Limits()))


def test_relative_paths_resolve_against_manifest_folder_and_urls_stay() -> None:
    (pair,) = pairs_from_csv("content,style\na/cat.jpg,gs://other/s.png|/abs/t.png\n")
    assert pair.content == "gs://bucket/set/a/cat.jpg"
    assert pair.styles == ("gs://other/s.png", "/abs/t.png")


def test_derived_ids_are_readable_and_unique_and_respect_explicit_ids() -> None:
    items = pairs_from_csv(
        "id,content,style\n"
        ",cat.jpg,wave.png\n"
        ",cat.jpg,wave.png\n"
        "cat__wave-3,dog.jpg,wave.png\n"
        ",cat.jpg,wave.png\n"
        "My Pair!,cat.jpg,x.png\n"
    )
    assert [item.id for item in items] == ["cat__wave", "cat__wave-2", "cat__wave-3", "cat__wave-4", "My_Pair"]


def test_duplicate_explicit_id_fails_the_later_row() -> None:
    first, second = pairs_from_csv("id,content,style\nx,a.jpg,s.png\nx,b.jpg,s.png\n")
    assert isinstance(first, Pair)
    assert isinstance(second, Failure) and "duplicate id 'x' (first used at m.csv line 2)" in second.error


@pytest.mark.parametrize(
    "raw", ["../../escape", "a/b", "a\\b", ".hidden", "..", "///", "_.tmp-evil", "<.hidden", " ._x"]
)
def test_path_like_and_hidden_ids_are_refused(raw: str) -> None:
    with pytest.raises(
        ValueError, match=r"could write outside the output folder|no usable characters|hidden file name"
    ):
        safe_id(raw)


def test_ids_keep_letters_of_any_script_within_a_file_name_s_bytes() -> None:
    assert safe_id("cafe\u0301 / x".replace(" / ", " ")) == "café_x"  # NFC: one letter, not e + accent
    assert safe_id("北京__étoile") == "北京__étoile"
    assert safe_id("a\u202eb") == "a_b"  # a right-to-left override is no letter
    long = safe_id("北" * 100)
    assert len(long.encode()) <= 200 and long == "北" * 66


def test_overrides_are_typed_and_validated() -> None:
    ok, bad_bool, bad_int, bad_weights, extra = pairs_from_csv(
        "content,style,iterations,original_colors,style_weights,init\n"
        "a.jpg,s.png|t.png,7,yes,1|3,start.png\n"
        "a.jpg,s.png,7,maybe,,\n"
        "a.jpg,s.png,7.5,,,\n"
        "a.jpg,s.png|t.png,,,1,\n"
        "a.jpg,s.png,,,,,surplus\n"
    )
    assert isinstance(ok, Pair)
    # The pair carries its resolved settings: the job's, with the row's overrides applied.
    assert (ok.config.iterations, ok.config.color_control, ok.config.init) == (
        7,
        "luminance",
        "gs://bucket/set/start.png",
    )
    assert ok.config.replace(iterations=StyleConfig().iterations, color_control="none", init="content") == StyleConfig(
        weights="random"
    )
    assert ok.style_weights == (1.0, 3.0)
    assert "original_colors must be true or false, got 'maybe'" in bad_bool.error
    assert "iterations must be int, got '7.5'" in bad_int.error
    assert "style_weights [1.0] must be 2 finite values" in bad_weights.error
    assert "more fields than the header" in extra.error


def test_nan_style_weight_is_refused() -> None:
    (failure,) = pairs_from_csv("content,style,style_weights\na.jpg,s.png|t.png,nan|1\n")
    assert isinstance(failure, Failure) and "style_weights [nan, 1.0] must be 2 finite values" in failure.error


def test_style_weights_that_are_not_numbers_fail_their_row() -> None:
    (text,) = pairs_from_csv("content,style,style_weights\na.jpg,s.png|t.png,2|heavy\n")
    assert "style_weights must be numbers (separated by '|'), got ['2', 'heavy']" in text.error
    rows = [("m.jsonl line 1", {"content": "a.jpg", "style": ["s.png", "t.png"], "style_weights": [None, 1]})]
    (null,) = validate_rows(rows, ".", StyleConfig(weights="random"), Limits())
    assert isinstance(null, Failure) and "style_weights must be numbers (separated by '|'), got [None, 1]" in null.error


def test_json_numbers_are_accepted_when_whole() -> None:
    rows = [("m.jsonl line 1", {"content": "a.jpg", "style": "s.png", "iterations": 300.0, "seed": 4})]
    (pair,) = validate_rows(rows, ".", StyleConfig(weights="random"), Limits())
    assert pair.config == StyleConfig(weights="random", iterations=300, seed=4)
    rows = [("m.jsonl line 1", {"content": "a.jpg", "style": "s.png", "iterations": 2.5})]
    (failure,) = validate_rows(rows, ".", StyleConfig(weights="random"), Limits())
    assert "iterations must be int, got 2.5" in failure.error


def test_manifest_format_from_extension() -> None:
    assert manifest_format("gs://b/m.CSV", None) == "csv"
    assert manifest_format("m.jsonl", None) == "jsonl"
    assert manifest_format("m.txt", "jsonl") == "jsonl"
    with pytest.raises(ValueError, match=re.escape("pass --manifest_format csv|jsonl")):
        manifest_format("m.txt", None)


def test_the_tree_layout_keeps_each_contents_folder_below_the_manifests() -> None:
    text = (
        "id,content,style\n"
        ",n01/x_1.jpg,s.png\n"
        ",n02/x_1.jpg,s.png\n"
        ",n02/deep/x_1.jpg,s.png\n"
        "mine,n02/x_2.jpg,s.png\n"
        ",gs://elsewhere/x_1.jpg,s.png\n"
        ",../up/x_1.jpg,s.png\n"
        ",.cache/x_9.jpg,s.png\n"
        ",n03/._x.jpg,s.png\n"
    )
    rows = list(parse_rows(text.encode(), "m.csv", "csv"))
    items = list(
        validate_rows(rows, "gs://bucket/set", StyleConfig(weights="random"), Limits(), tree_root="gs://bucket/set")
    )
    ids = [item.id if isinstance(item, Pair) else None for item in items]
    # Same file names in two classes never collide; a content outside the root, or above it, is flat.
    assert ids[:6] == ["n01/x_1__s", "n02/x_1__s", "n02/deep/x_1__s", "n02/mine", "x_1__s", "x_1__s-2"]
    hidden, dot_file = items[6:]
    # A hidden folder is mirrored with its leading '.' escaped: visible, and nothing else takes its name.
    assert isinstance(hidden, Pair) and hidden.id == "%2Ecache/x_9__s" and hidden.label == ".cache"
    assert isinstance(dot_file, Failure) and "'._x__s'" in dot_file.error  # a macOS ._ file fails its own row


@pytest.mark.parametrize("seed", ["9" * 4000, "-" + "9" * 48, str(2**64), "-" + str(2**63 + 1)])
def test_a_seed_the_log_cannot_hold_fails_its_row(seed) -> None:
    # A 4,000-digit seed was accepted, logged, and every rerun redid the pair as "repaired"
    # (the reader's numbers end at 40 characters): what the row parser accepts must read back.
    import json

    from transforms.reading import parse_json

    (failed, kept, largest) = pairs_from_csv(
        f"content,style,seed\na.jpg,b.jpg,{seed}\nc.jpg,b.jpg,7\nd.jpg,b.jpg,{2**64 - 1}\n"
    )
    assert isinstance(failed, Failure) and "seed must be" in failed.error
    assert len(failed.error) < 400
    assert isinstance(kept, Pair) and kept.config.seed == 7
    assert parse_json(json.dumps(largest.config.to_dict()), "log")["seed"] == 2**64 - 1  # read back as written


def test_a_url_s_user_info_never_reaches_a_record() -> None:
    # https://user:pw@host/... was copied into failure records and the report (#38).
    failed, other = pairs_from_csv(
        "content,style\nhttps://anna:s3cret@example.com/cat.jpg,b.jpg\nc.jpg,s3://key:s3cret@bucket/s.jpg\n"
    )
    assert isinstance(failed, Failure) and "https://example.com/cat.jpg" in failed.error
    assert "s3cret" not in json.dumps(failed.to_dict()) and "anna" not in json.dumps(failed.to_dict())
    # A pair keeps its location to read it; what the job writes of it, its log's inputs, does not.
    from transforms import outputs

    assert isinstance(other, Pair) and other.styles == ("s3://key:s3cret@bucket/s.jpg",)
    assert outputs.pair_inputs(other)["styles"] == ["s3://bucket/s.jpg"]
