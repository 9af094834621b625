import os

import pytest

from transforms import storage


def test_atomic_local_write_leaves_only_the_target(tmp_path) -> None:
    target = tmp_path / "deep" / "folder" / "x.json"
    storage.write_atomic(str(target), b"one")
    storage.write_atomic(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["x.json"]


def test_failed_local_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "x.png"
    storage.write_atomic(str(target), b"old")

    def broken_replace(src: str, dst: str, **_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        storage.write_atomic(str(target), b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.png"]


def test_memory_filesystem_round_trip_and_glob() -> None:
    storage.write_atomic("memory://bucket/a/1.png", b"x")
    storage.write_atomic("memory://bucket/a/2.png", b"y")
    assert storage.read_bytes("memory://bucket/a/2.png", 10) == b"y"
    found = storage.glob("memory://bucket/a/*.png")
    assert [storage.stem(f) for f in found] == ["1", "2"]
    assert [storage.read_bytes(f, 10) for f in found] == [b"x", b"y"]
    assert storage.exists("memory://bucket/a/1.png") and not storage.exists("memory://bucket/a/3.png")
    with pytest.raises(FileNotFoundError, match="memory://bucket/none: no such file"):
        storage.read_bytes("memory://bucket/none", 10)


def test_local_copy_downloads_remote_once(tmp_path) -> None:
    storage.write_atomic("memory://weights/vgg.pth", b"weights")
    path = storage.local_copy("memory://weights/vgg.pth", str(tmp_path))
    assert open(path, "rb").read() == b"weights"
    assert storage.local_copy("memory://weights/vgg.pth", str(tmp_path)) == path
    assert storage.local_copy("/some/local.pth") == "/some/local.pth"


def test_resolve_and_stem() -> None:
    assert storage.resolve("a/b.png", "gs://x/y") == "gs://x/y/a/b.png"
    assert storage.resolve("gs://z/c.png", "/local") == "gs://z/c.png"
    assert storage.stem("gs://b/dir/cat.photo.jpg") == "cat.photo"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        storage.write_atomic(str(tmp_path / "out.png"), b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == mode
