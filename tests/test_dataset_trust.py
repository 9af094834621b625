"""A dataset a team can train on: the index is exactly the output, one image per pair, labels as
the input names them, and nothing touched that the job did not write, nor written outside OUTPUT
(docs/datasets.md, docs/reliability.md). Each test drives the job as a user does (FnApiRunner,
seeded random weights, one iteration, tiny images) unless it checks one function's property."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.main import run
from tests.helpers import failures_of, summary_of, synthetic_image
from transforms import claims, storage
from transforms.index import StylizedImages, read_index
from transforms.limits import Limits
from transforms.manifest import validate_rows
from transforms.names import output_folder_name
from transforms.nst.config import StyleConfig
from transforms.records import Failure, Pair


def make_tree(root: Path, files: dict[str, tuple[int, int]], styles: int = 2) -> None:
    """Contents at ``root/in/<name>`` of the given sizes, and ``styles`` styles in ``root/styles``."""
    for index, (name, (width, height)) in enumerate(sorted(files.items())):
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(index + 1, width, height).save(root / "in" / name)
    (root / "styles").mkdir(exist_ok=True)
    for index in range(styles):
        synthetic_image(50 + index, 40, 40).save(root / "styles" / f"s{index + 1}.png")


def job(weights: str, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--runner=FnApiRunner",
        f"--output={out}",
        f"--weights={weights}",
        "--weights_family=torchvision",
        "--iterations=1",
        f"--contents={root}/in/**/*.png",
        f"--styles={root}/styles/*.png",
        "--styles_per_content=1",
        "--output_layout=tree",
        "--image_size=32",
        *extra,
    ]


def images_on_disk(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())


def index_images(out: Path) -> list[str]:
    """The index read through its pointer, and read whole as index/*.jsonl: the same lines."""
    lines = list(read_index(str(out)))
    whole = [json.loads(t) for shard in sorted((out / "index").glob("*.jsonl")) for t in shard.read_text().splitlines()]
    assert sorted(json.dumps(x, sort_keys=True) for x in lines) == sorted(json.dumps(x, sort_keys=True) for x in whole)
    return sorted(line["image"] for line in lines)


FOUR = {"a/x1.png": (32, 24), "a/x2.png": (24, 32), "b/x1.png": (32, 32), "b/c/x3.png": (30, 28)}


# --- 1. claims own only claims ----------------------------------------------------------------


def test_the_claims_sweep_removes_only_expired_claims_it_wrote(weights_file, tmp_path) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    (out / "claims" / "sub").mkdir(parents=True)
    user_files = {
        "claims/README": b"notes of mine",
        "claims/sub/photo.jpg": b"\xff\xd8 a photo",
        "claims/notes.json": b'{"mine": true}',  # JSON, but not a claim
    }
    for name, data in user_files.items():
        (out / name).write_bytes(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.json").write_text(json.dumps({"run_id": "r", "expires_at": 0, "host": "h", "pid": 1}))
    (out / "claims" / "link.json").symlink_to(elsewhere / "keep.json")  # a link to what looks like a claim
    expired = {"run_id": "old", "expires_at": time.time() - 5, "host": "elsewhere", "pid": 1}
    (out / "claims" / "a").mkdir()
    (out / "claims" / "a" / "gone__s9.json").write_text(json.dumps(expired))

    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    for name, data in user_files.items():
        assert (out / name).read_bytes() == data, name
    assert (out / "claims" / "link.json").is_symlink() and (elsewhere / "keep.json").is_file()
    assert not (out / "claims" / "a").exists()  # the expired claim went, then its empty folder
    # Every claim of the run was released, and no empty claim folder stays.
    assert sorted(p.relative_to(out).as_posix() for p in (out / "claims").rglob("*")) == [
        "claims/README",
        "claims/link.json",
        "claims/notes.json",
        "claims/sub",
        "claims/sub/photo.jpg",
    ]


def test_claims_leave_no_empty_folder_behind(weights_file, tmp_path) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    assert not (out / "claims").exists()


@pytest.mark.parametrize("user_folder", ["keepme/empty", "a/mine"])  # beside the class folders, and inside one
def test_the_claims_sweep_removes_only_the_folders_the_job_made(weights_file, tmp_path, user_folder) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    (out / "claims" / user_folder).mkdir(parents=True)  # a user's empty folders
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    assert (out / "claims" / user_folder).is_dir()
    # the job's own class folders went (b/c, whose pair's claim was there, too); the user's stay
    left = sorted(p.relative_to(out / "claims").as_posix() for p in (out / "claims").rglob("*"))
    assert left == sorted({user_folder.split("/")[0], user_folder})


@pytest.mark.parametrize("pid", [2147483648, 10**30, 0, -5, True])
def test_a_claim_with_a_field_the_checks_cannot_use_is_not_a_claim(tmp_path, pid) -> None:
    # pid 2147483648 made os.kill raise OverflowError in every run's sweep: whatever the reader
    # accepts, the code after it can use; the rest is a file the job did not write, left alone.
    out = tmp_path / "out"
    (out / "claims").mkdir(parents=True)
    record = {"run_id": "r", "expires_at": time.time() + 60, "host": socket.gethostname(), "pid": pid}
    (out / "claims" / "p.json").write_text(json.dumps(record))
    claims.remove_expired(str(out))  # the pre-flight sweep: no exception
    assert json.loads((out / "claims" / "p.json").read_text()) == record
    with pytest.raises(claims.NotAClaimError, match=r"is not a process id|not a claim's types"):
        claims.acquire(str(out), "p", "run-b")


@pytest.mark.parametrize("kind", ["link to a folder", "plain file"])
@pytest.mark.parametrize("folder", ["claims", "images", "logs", "index"])
def test_an_output_folder_that_is_not_a_real_folder_is_refused_before_any_work(
    weights_file, tmp_path, capsys, kind, folder
) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.json").write_text("{}")
    if kind == "plain file":
        (out / folder).write_text("mine")
    else:
        (out / folder).symlink_to(elsewhere)
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 2
    error = capsys.readouterr().err
    assert f"{out / folder} is not a real folder" in error
    assert (elsewhere / "precious.json").read_text() == "{}" and sorted(os.listdir(elsewhere)) == ["precious.json"]
    assert sorted(os.listdir(out)) == [folder]  # nothing written
    if kind == "plain file":
        assert (out / folder).read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "extra"),
    [("summary.json", ()), ("index.json", ()), ("plan.json", ("--dry_run",)), ("summary.json", ("--dry_run",))],
)
def test_a_folder_where_a_run_writes_a_file_is_refused_before_any_work(
    weights_file, tmp_path, capsys, name, extra
) -> None:
    # On main every pair was computed, then the run failed at its summary or index switch, on
    # every rerun; now it is refused up front, as a file where a folder goes is.
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    (out / name / "mine").mkdir(parents=True)
    assert run(job(weights_file("vgg19"), tmp_path, out, *extra)) == 2
    assert f"{out / name} is a folder, where the job writes a file" in capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [name, f"{name}/mine"]


def test_a_dry_run_removes_nothing(weights_file, tmp_path) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    (out / "claims").mkdir(parents=True)
    expired = {"run_id": "old", "expires_at": time.time() - 5, "host": "elsewhere", "pid": 1}
    (out / "claims" / "gone.json").write_text(json.dumps(expired))
    stale = out / "images" / ".tmp-0123456789abcdef-x.png"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a killed write")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert run(job(weights_file("vgg19"), tmp_path, out, "--dry_run")) == 0
    assert (out / "claims" / "gone.json").is_file() and stale.is_file()


def test_a_file_where_a_claim_goes_fails_its_pair_and_is_left_alone(weights_file, tmp_path) -> None:
    make_tree(tmp_path, {"a/x1.png": (32, 32), "a/x2.png": (32, 32)}, styles=1)
    out = tmp_path / "out"
    (out / "claims" / "a").mkdir(parents=True)
    (out / "claims" / "a" / "x1__s1.json").write_text("my notes, not a claim")
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    (failure,) = failures_of(out)
    assert failure["id"] == "a/x1__s1" and "is not a claim this job wrote" in failure["error"]
    assert (out / "claims" / "a" / "x1__s1.json").read_text() == "my notes, not a claim"
    assert images_on_disk(out) == ["images/a/x2__s1.png"]


def test_a_claim_sweep_never_follows_a_link(tmp_path) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expired = json.dumps({"run_id": "old", "expires_at": time.time() - 5, "host": "elsewhere", "pid": 1})
    (elsewhere / "x.json").write_text(expired)  # parses as an expired claim, but is not in claims/
    (out / "claims").mkdir(parents=True)
    (out / "claims" / "class").symlink_to(elsewhere)
    (out / "claims" / "real.json").write_text(expired)
    assert claims.remove_expired(str(out)) == 1
    assert (elsewhere / "x.json").is_file() and not (out / "claims" / "real.json").exists()


# --- 2. the index is the output ----------------------------------------------------------------


def test_the_index_lists_exactly_the_images_after_a_run_that_lost_its_index(weights_file, tmp_path) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    args = job(weights_file("vgg19"), tmp_path, out)
    assert run(args) == 0
    first = images_on_disk(out)
    assert len(first) == 4 and index_images(out) == first
    # A killed run: its finished pairs on disk, but no index switched to them (the pointer and
    # shards are what the end of a run writes).
    (out / "index.json").unlink()
    for shard in (out / "index").iterdir():
        shard.unlink()
    (out / "index" / "notes.txt").write_text("mine")
    earlier = out / "index" / "20261101T000000Z-abc123-00000-of-00001.jsonl"  # an earlier release's per-run shard
    earlier.write_text('{"id": "gone", "image": "images/gone.png"}\n')
    # Both styles for each content: the killed run's four pairs are found done, four are new.
    assert run([*args, "--styles_per_content=2"]) == 0
    assert summary_of(out)["counts"]["skipped"] == 4
    images = images_on_disk(out)
    assert len(images) == 8 and index_images(out) == images  # both runs' images, each once
    assert (out / "index" / "notes.txt").read_text() == "mine" and not earlier.exists()
    assert summary_of(out)["index"]["images"] == 8
    # A run of the first four only: the other four stay in the index (from the index it replaces).
    assert run(args) == 0
    assert summary_of(out)["counts"]["skipped"] == 4 and index_images(out) == images
    shards = sorted(p.name for p in (out / "index").glob("*.jsonl"))
    assert [f"index/{name}" for name in shards] == json.loads((out / "index.json").read_text())["shards"]


def test_a_user_s_files_in_index_are_never_removed_whatever_their_names(weights_file, tmp_path) -> None:
    # mydata-00000.jsonl (older than a killed run's shard may be) and train-00000-of-00001.jsonl
    # (any age) were removed as shards; only shards of this job's run ids, or named by the
    # pointer their own run wrote, may go. A forged pointer naming a user's file removes nothing.
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    args = job(weights_file("vgg19"), tmp_path, out)
    assert run(args) == 0
    hour_ago = time.time() - 3600
    mine = {"mydata-00000.jsonl": "a", "train-00000-of-00001.jsonl": "b", "notes-12345.jsonl": "c"}
    for name, text in mine.items():
        (out / "index" / name).write_text(text)
        os.utime(out / "index" / name, (hour_ago, hour_ago))
    pointer = json.loads((out / "index.json").read_text())
    pointer["shards"].append("index/notes-12345.jsonl")  # a pointer naming a user's file...
    pointer["shards"] = [s for s in pointer["shards"] if "notes" in s] + [
        s for s in pointer["shards"] if "notes" not in s
    ]
    (out / "index.json").write_text(json.dumps(pointer))
    killed = out / "index" / "20261101T000000Z-abc123-00000.jsonl"  # a killed run's shard, an hour old
    killed.write_text("{}\n")
    os.utime(killed, (hour_ago, hour_ago))
    assert run(args) == 0
    for name, text in mine.items():
        assert (out / "index" / name).read_text() == text, name
    assert not killed.exists()
    assert sorted(line["image"] for line in read_index(str(out))) == images_on_disk(out)


@pytest.mark.parametrize("forged", ["b", "a" * (10 << 20), None])  # another class, 10 MiB, none
def test_a_log_whose_label_is_not_its_folder_is_redone_not_believed(weights_file, tmp_path, forged) -> None:
    # label "cats" in logs/dogs/d1__s1.json was trusted: the pair was skipped as done and the
    # index gave it the label cats (a 10 MiB label went into the shard). The label is the input
    # folder the id's output folder was made from: a log saying otherwise is damaged.
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    args = job(weights_file("vgg19"), tmp_path, out)
    assert run(args) == 0
    location = out / "logs" / "a" / "x1__s1.json"
    log = json.loads(location.read_text())
    log["label"] = forged
    location.write_text(json.dumps(log))
    assert run(args) == 0
    assert summary_of(out)["counts"]["repaired"] == 1
    labels = {line["id"]: line["label"] for line in read_index(str(out))}
    assert labels["a/x1__s1"] == "a" and set(labels.values()) == {"a", "b", "b/c"}
    assert json.loads(location.read_text())["label"] == "a"


def test_index_lines_carry_what_a_loader_needs_and_load_as_a_dataset(weights_file, tmp_path) -> None:
    make_tree(tmp_path, {"class c/x1.png": (32, 24), "class_c/x1.png": (24, 32), "Class_c/x1.png": (32, 32)}, styles=1)
    out = tmp_path / "out"
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    lines = sorted(read_index(str(out)), key=lambda line: line["id"])
    assert [line["label"] for line in lines] == ["Class_c", "class c", "class_c"]  # three labels, as named
    for line in lines:
        assert line["image"] == f"images/{line['label']}/x1__s1.png"
        assert Image.open(out / line["image"]).size == tuple(line["size"])
        assert line["content"].endswith(f"in/{line['label']}/x1.png") and line["styles"][0].endswith("s1.png")
        assert line["final_loss"] > 0 and line["bytes"] == (out / line["image"]).stat().st_size
    dataset = StylizedImages(str(out), transform=lambda image: torch.tensor(image.size))
    assert len(dataset) == 3 and dataset.classes == ["Class_c", "class c", "class_c"]
    assert [dataset[i][1] for i in range(3)] == [0, 1, 2]
    assert dataset[1][0].tolist() == [32, 24]  # "class c"'s content is 32x24
    loaded = list(torch.utils.data.DataLoader(dataset, batch_size=3))  # type: ignore[var-annotated]
    assert loaded[0][1].tolist() == [0, 1, 2]


# --- 3. one image per pair ---------------------------------------------------------------------


def test_a_format_change_leaves_one_image_per_pair(weights_file, tmp_path) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    args = job(weights_file("vgg19"), tmp_path, out)
    assert run(args) == 0
    assert run([*args, "--output_format=jpeg"]) == 0
    assert run([*args, "--output_format=webp"]) == 0
    images = images_on_disk(out)
    assert len(images) == 4 and all(i.endswith(".webp") for i in images)
    assert index_images(out) == images
    # An earlier release's leftover beside a done pair goes when a run finds the pair done.
    leftover = out / images[0].replace(".webp", ".png")
    leftover.write_bytes(b"an earlier release's image")
    assert run([*args, "--output_format=webp"]) == 0
    assert not leftover.exists() and images_on_disk(out) == images == index_images(out)


# --- 4. labels never merge ---------------------------------------------------------------------

LONG = "é" * 100 + "x" * 54  # 254 bytes


@pytest.mark.parametrize(
    "folders",
    [
        ["class c", "class_c"],
        [LONG + "a", LONG[:-1] + "yb"],  # 255-byte names (a file name's most) sharing their first 253
        ["Ünïcode 北京", "Unicode 北京", "UNICODE 北京"],
        ["v1.0", "v1_0", "v1.0.", ".hidden"],
    ],
    ids=["space vs underscore", "long names", "unicode and case", "dots"],
)
def test_odd_folder_names_come_back_as_distinct_labels(weights_file, tmp_path, folders) -> None:
    make_tree(tmp_path, {f"{folder}/x.png": (32, 32) for folder in folders}, styles=1)
    out = tmp_path / "out"
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    assert summary_of(out)["counts"]["succeeded"] == len(folders)
    labels = sorted(line["label"] for line in read_index(str(out)))
    assert labels == sorted(folders)
    top = sorted(p.name for p in (out / "images").iterdir())
    assert len(top) == len(folders)
    assert sorted(output_folder_name(folder) for folder in folders) == top


def test_output_names_that_would_merge_or_clash_fail_their_rows_naming_both(tmp_path) -> None:
    long = "x" * 300  # over a file name's bytes: shortened to 200 bytes and a digest
    rows = [
        ("m line 2", {"content": f"{long}/p.png", "style": "s.png"}),
        ("m line 3", {"content": f"{output_folder_name(long)}/q.png", "style": "s.png"}),  # that name, literally
        ("m line 4", {"content": "x1.png", "style": "s1.png"}),  # images/x1__s1.png ...
        ("m line 5", {"content": "x1__s1.png/y.png", "style": "s1.png"}),  # ... and a folder of that name
        ("m line 6", {"content": "fine/z.png", "style": "s.png"}),
    ]
    items = list(validate_rows(rows, "/data", StyleConfig(weights="random"), Limits(), tree_root="/data"))
    by_source = {item.source: item for item in items}
    for source in ("m line 2", "m line 3"):
        failure = by_source[source]
        assert isinstance(failure, Failure) and "would be one output folder" in failure.error
        assert failure.error.count("'xxx") == 2  # names both
    clash = by_source["m line 4"]
    assert isinstance(clash, Failure) and "'x1__s1.png' would take the name of the output folder" in clash.error
    assert all(isinstance(by_source[s], Pair) for s in ("m line 5", "m line 6"))


# Folder names as any tree may hold them: any character but '/' and NUL (what a name cannot
# hold), surrogates standing for bytes that are not UTF-8, up to and over 255 bytes. Not '::',
# which fsspec reads as a chain of filesystems: such a path is refused as an input location.
folder_names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=()), min_size=1, max_size=90
).filter(lambda name: name not in (".", "..") and "::" not in name)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(folder_names, min_size=1, max_size=8, unique=True))
def test_folder_names_map_one_to_one_and_stay_inside_the_output(names) -> None:
    mapped = [output_folder_name(name) for name in names]
    assert len(set(mapped)) == len(names)  # one-to-one
    for name in mapped:
        assert "/" not in name and "\0" not in name and not name.startswith(".")  # one folder, visible
        assert len(name.encode()) <= 255  # a file name's bytes: encodable, within the limit
    rows = [(f"line {n}", {"content": f"/data/{name}/x.png", "style": "/s.png"}) for n, name in enumerate(names)]
    items = list(validate_rows(rows, "/data", StyleConfig(weights="random"), Limits(), tree_root="/data"))
    pairs = [item for item in items if isinstance(item, Pair)]
    assert len(pairs) == len(names)  # no collision, no failure
    assert sorted(p.label for p in pairs) == sorted(names)
    for pair in pairs:
        image = storage.join("/out", "images", f"{pair.id}.png")
        assert storage.relative_path(image, "/out/images") == f"{pair.id}.png"  # inside, at its own name
        assert pair.id == f"{output_folder_name(pair.label)}/x__s"


# --- 5. inputs and outputs stay apart ------------------------------------------------------------


def test_an_output_inside_the_contents_tree_is_never_read_back(weights_file, tmp_path, caplog) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "in" / "out"
    args = job(weights_file("vgg19"), tmp_path, out)
    assert run(args) == 0
    first = images_on_disk(out)
    assert len(first) == 4
    outputs = len(list(out.rglob("*.png")))  # the images, and the contact sheets
    caplog.clear()
    assert run(args) == 0
    assert summary_of(out)["counts"] == {**summary_of(out)["counts"], "succeeded": 0, "skipped": 4, "failed": 0}
    assert images_on_disk(out) == first  # no out/images/out/images/...
    left_out = [r.getMessage() for r in caplog.records if "inside --output" in r.getMessage()]
    assert len(left_out) == 1 and left_out[0].startswith(f"{outputs} files matching --contents")


def test_a_manifest_row_naming_an_output_fails_alone(weights_file, tmp_path) -> None:
    make_tree(tmp_path, {"x1.png": (32, 32)}, styles=1)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    synthetic_image(9, 32, 32).save(out / "images" / "old.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,content,style\nok,in/x1.png,styles/s1.png\nloop,{out}/images/old.png,styles/s1.png\n")
    args = [
        "--runner=FnApiRunner",
        f"--output={out}",
        f"--weights={weights_file('vgg19')}",
        "--weights_family=torchvision",
        "--iterations=1",
        "--image_size=32",
        f"--manifest={manifest}",
    ]
    assert run(args) == 0
    (failure,) = failures_of(out)
    assert failure["source"].endswith("line 3") and "inside --output" in failure["error"]


# --- 6. writes stay inside OUTPUT ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["images/a", "logs/a", "images/b/c"])
def test_a_link_inside_the_output_is_never_written_through(weights_file, tmp_path, where) -> None:
    make_tree(tmp_path, FOUR)
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / where).parent.mkdir(parents=True)
    (out / where).symlink_to(elsewhere, target_is_directory=True)
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    assert os.listdir(elsewhere) == []
    failed = {f["id"]: f["error"] for f in failures_of(out)}
    blocked = where.split("/", 1)[1]
    assert failed and all(pair_id.startswith(f"{blocked}/") for pair_id in failed)
    assert all(f"{out / where} is a link, not a folder" in error for error in failed.values())
    assert summary_of(out)["counts"]["succeeded"] == 4 - len(failed)
    assert index_images(out) == images_on_disk(out)


# --- 7. sizes before any encoding -----------------------------------------------------------------


def test_a_thin_content_at_its_own_size_fails_from_its_header_alone(weights_file, tmp_path, monkeypatch) -> None:
    from transforms.handler import PairInputs

    make_tree(tmp_path, {"a/thin.png": (3000, 1), "a/ok.png": (32, 32)}, styles=1)
    requested = []
    original = PairInputs.request
    monkeypatch.setattr(
        PairInputs,
        "request",
        lambda self, engine, pair, placement: requested.append(pair.id) or original(self, engine, pair, placement),
    )
    out = tmp_path / "out"
    assert run([*job(weights_file("vgg19"), tmp_path, out), "--image_size=0"]) == 0
    (failure,) = failures_of(out)
    assert failure["id"] == "a/thin__s1" and failure["stage"] == "stylize"
    assert (
        "a 3000x1 content gives a 3000x1 px result" in failure["error"] and "needs at least 16 px" in failure["error"]
    )
    assert requested == ["a/ok__s1"]  # the thin one's style was never read nor encoded


@pytest.mark.slow  # a job process of its own, killed
def test_a_job_killed_with_sigkill_and_rerun_has_an_index_of_exactly_its_images(weights_file, tmp_path) -> None:
    import signal
    import subprocess
    import sys

    make_tree(tmp_path, {f"c{n % 3}/x{n}.png": (32, 32) for n in range(12)}, styles=2)
    out = tmp_path / "out"
    args = job(weights_file("vgg19"), tmp_path, out, "--iterations=40")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240  # a guard against a hang, not a measure of speed
    while len(list((out / "logs").rglob("*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finished = len(list((out / "logs").rglob("*.json")))
    assert 3 <= finished < 12 and not (out / "index.json").exists()  # killed mid-run, before any index
    assert run(args) == 0
    assert summary_of(out)["counts"]["skipped"] >= finished - 1  # at most one pair was cut between its writes
    images = images_on_disk(out)
    assert len(images) == 12 and index_images(out) == images


def test_a_name_that_is_not_utf8_reaches_every_output_escaped(weights_file, tmp_path, capsys) -> None:
    # A folder and a file whose names' bytes are not UTF-8 (Latin-1 'classe ä', 'photo ö'), as
    # old archives hold them: the job used to fail in its index step ("surrogates not allowed")
    # and write no report. Now the image goes under an escaped name every store accepts, and the
    # index, the report and the console show the names escaped.
    make_tree(tmp_path, {}, styles=1)
    folder = os.path.join(os.fsencode(tmp_path / "in"), b"cl\xe4ss")
    os.makedirs(folder)
    synthetic_image(1, 40, 30).save(os.fsdecode(os.path.join(folder, b"ph\xf6to.png")))
    out = tmp_path / "out"
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    console = capsys.readouterr().out
    assert "1 succeeded, 0 skipped, 0 failed" in console
    assert images_on_disk(out) == ["images/cl%E4ss/ph_to__s1.png"]
    (line,) = read_index(str(out))
    assert line["label"] == "cl\\xe4ss" and line["content"].endswith("in/cl\\xe4ss/ph\\xf6to.png")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "ph\\xf6to.png" in page and "could not be written" not in console
    assert run(job(weights_file("vgg19"), tmp_path, out)) == 0
    assert "0 succeeded, 1 skipped, 0 failed" in capsys.readouterr().out
