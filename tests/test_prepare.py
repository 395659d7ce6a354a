"""bench.core.squad_files: fetching and verifying the SQuAD files, offline, with a fake ``urlopen``."""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.core import squad_files as prepare
from bench.apps.prepare import main
from bench.core.squad_files import PrepareError, find_squad_file, prepare_squad
from tests.test_data import GZIP_CORRUPTIONS, corrupt_gzip

FAKE = {"train-v2.0.json": b'{"version": "v2.0", "data": ["train"]}' * 500,
        "dev-v2.0.json": b'{"version": "v2.0", "data": ["dev"]}' * 300}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def fake_shas(monkeypatch):
    """Point the sha table at the fake files' bytes (the real files never enter these tests)."""
    for name, data in FAKE.items():
        monkeypatch.setitem(prepare.SQUAD_FILES, name, sha(data))


class FakeResponse:
    """Serves bytes in small pieces; optionally breaks after ``fail_after`` bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None):
        self.stream = io.BytesIO(data)
        self.fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.stream.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return self.stream.read(1000)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeServer:
    """A stand-in for ``urllib.request.urlopen`` that records what was asked."""

    def __init__(self, files: dict[str, bytes] | None = None, error: Exception | None = None,
                 fail_after: int | None = None):
        self.files = FAKE if files is None else files
        self.error = error
        self.fail_after = fail_after
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float):
        self.calls.append((url, timeout))
        if self.error is not None:
            raise self.error
        return FakeResponse(self.files[url.rsplit("/", 1)[1]], self.fail_after)


def no_network(url, timeout):
    raise AssertionError(f"unexpected download of {url}")


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# -- downloads -------------------------------------------------------------------------------

def test_download_writes_verified_files(tmp_path):
    server = FakeServer()
    paths = prepare_squad("2.0", tmp_path / "squad", urlopen=server, timeout=7)
    folder = tmp_path / "squad"
    assert paths == {"train": folder / "train-v2.0.json", "dev": folder / "dev-v2.0.json"}
    assert paths["train"].read_bytes() == FAKE["train-v2.0.json"]
    assert paths["dev"].read_bytes() == FAKE["dev-v2.0.json"]
    assert server.calls == [(prepare.SQUAD_URL + "train-v2.0.json", 7),
                            (prepare.SQUAD_URL + "dev-v2.0.json", 7)]
    assert listing(tmp_path / "squad") == ["dev-v2.0.json", "train-v2.0.json"]


def test_sha_mismatch_leaves_no_file(tmp_path):
    server = FakeServer(files={"train-v2.0.json": b"tampered", "dev-v2.0.json": FAKE["dev-v2.0.json"]})
    with pytest.raises(PrepareError, match=r"train-v2\.0\.json: sha256 is .*nothing was written"):
        prepare_squad("2.0", tmp_path, urlopen=server)
    assert listing(tmp_path) == []                  # neither the file nor its temporary


@pytest.mark.parametrize("error, reason", [
    (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")), "name resolution"),
    (socket.timeout("timed out"), "timed out"),
    (urllib.error.HTTPError(prepare.SQUAD_URL + "train-v2.0.json", 404, "Not Found", {}, None), "404"),
])
def test_failed_download_fails_at_once_naming_urls_and_from(tmp_path, error, reason):
    server = FakeServer(error=error)
    with pytest.raises(PrepareError) as excinfo:
        prepare_squad("2.0", tmp_path, urlopen=server)
    message = str(excinfo.value)
    assert reason in message and "--from DIR" in message and "\n" not in message
    assert prepare.SQUAD_URL + "train-v2.0.json" in message and prepare.SQUAD_URL + "dev-v2.0.json" in message
    assert len(server.calls) == 1                    # no second try, no retries
    assert listing(tmp_path) == []


def test_broken_transfer_leaves_no_partial_file(tmp_path):
    server = FakeServer(fail_after=3000)
    with pytest.raises(PrepareError, match="connection reset"):
        prepare_squad("2.0", tmp_path, urlopen=server)
    assert listing(tmp_path) == []


def test_files_already_present_are_skipped(tmp_path, caplog):
    for name, data in FAKE.items():
        (tmp_path / name).write_bytes(data)
    with caplog.at_level(logging.INFO, logger="bench.core.squad_files"):
        paths = prepare_squad("v2.0", tmp_path, urlopen=no_network)
    assert paths["dev"] == tmp_path / "dev-v2.0.json"
    messages = [record.getMessage() for record in caplog.records]
    assert sum("already present with the expected sha256, skipped" in message for message in messages) == 2


def test_file_present_with_wrong_sha_is_fetched_again(tmp_path, caplog):
    (tmp_path / "dev-v2.0.json").write_bytes(b"an old, different copy")
    (tmp_path / "train-v2.0.json").write_bytes(FAKE["train-v2.0.json"])
    server = FakeServer()
    with caplog.at_level(logging.INFO, logger="bench.core.squad_files"):
        prepare_squad("2.0", tmp_path, urlopen=server)
    assert [url for url, _ in server.calls] == [prepare.SQUAD_URL + "dev-v2.0.json"]
    assert (tmp_path / "dev-v2.0.json").read_bytes() == FAKE["dev-v2.0.json"]
    assert any("dev-v2.0.json: present but its sha256 is" in r.getMessage() for r in caplog.records)


# -- copies from a local folder --------------------------------------------------------------

def test_copy_from_local_folder(tmp_path):
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "train-v2.0.json").write_bytes(FAKE["train-v2.0.json"])
    (source / "dev-v2.0.json.gz").write_bytes(gzip.compress(FAKE["dev-v2.0.json"]))   # checked decompressed
    paths = prepare_squad("2.0", tmp_path / "squad", from_dir=source, urlopen=no_network)
    assert paths["train"].read_bytes() == FAKE["train-v2.0.json"]
    assert paths["dev"].name == "dev-v2.0.json" and paths["dev"].read_bytes() == FAKE["dev-v2.0.json"]
    assert listing(tmp_path / "squad") == ["dev-v2.0.json", "train-v2.0.json"]


def test_copy_of_a_wrong_local_file_is_refused(tmp_path):
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "train-v2.0.json").write_bytes(b"not the real thing")
    with pytest.raises(PrepareError, match=r"downloads/train-v2\.0\.json: sha256 is"):
        prepare_squad("2.0", tmp_path / "squad", from_dir=source, urlopen=no_network)
    assert listing(tmp_path / "squad") == []


def test_copy_from_a_folder_without_the_files(tmp_path):
    with pytest.raises(PrepareError) as excinfo:
        prepare_squad("2.0", tmp_path / "squad", from_dir=tmp_path / "empty", urlopen=no_network)
    message = str(excinfo.value)
    assert str(tmp_path / "empty" / "train-v2.0.json") in message
    assert str(tmp_path / "empty" / "train-v2.0.json.gz") in message


def test_corrupt_gzip_in_local_folder(tmp_path):
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "train-v2.0.json.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(PrepareError, match=r"could not read .*train-v2\.0\.json\.gz"):
        prepare_squad("2.0", tmp_path / "squad", from_dir=source, urlopen=no_network)
    assert listing(tmp_path / "squad") == []


@pytest.mark.parametrize("kind", GZIP_CORRUPTIONS)
def test_cli_corrupt_gzip_in_local_folder_is_one_line(tmp_path, capsys, kind):
    source = tmp_path / "downloads"
    source.mkdir()
    bad = corrupt_gzip(source / "train-v2.0.json.gz", FAKE["train-v2.0.json"], kind)
    assert main(["--version", "2.0", "--data_dir", str(tmp_path / "squad"), "--from", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prepare-data: error: could not read {bad}: ") and err.count("\n") == 1
    assert listing(tmp_path / "squad") == []


# -- the sha table and locating files --------------------------------------------------------

def test_sha_table_lists_the_official_files():
    # (the fixture replaced the two v2.0 sums for these tests; the v1.1 ones are the real ones)
    assert sorted(prepare.SQUAD_FILES) == ["dev-v1.1.json", "dev-v2.0.json",
                                           "train-v1.1.json", "train-v2.0.json"]
    assert prepare.SQUAD_FILES["dev-v1.1.json"] == (
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9")
    assert all(len(value) == 64 and int(value, 16) >= 0 for value in prepare.SQUAD_FILES.values())


def test_find_squad_file(tmp_path):
    (tmp_path / "dev-v2.0.json").write_text("{}")
    (tmp_path / "train-v1.1.json.gz").write_bytes(b"")
    assert find_squad_file(tmp_path, "dev", "2.0") == tmp_path / "dev-v2.0.json"
    assert find_squad_file(tmp_path, "train", "v1.1") == tmp_path / "train-v1.1.json.gz"
    with pytest.raises(FileNotFoundError) as excinfo:
        find_squad_file(tmp_path, "train", "2.0")
    message = str(excinfo.value)
    assert str(tmp_path / "train-v2.0.json") in message and str(tmp_path / "train-v2.0.json.gz") in message
    assert f"squad-bench prepare-data --version 2.0 --data_dir {tmp_path}" in message
    with pytest.raises(ValueError, match="unknown SQuAD split 'test'"):
        find_squad_file(tmp_path, "test", "2.0")


# -- command line ----------------------------------------------------------------------------

def test_cli_copies_from_local_folder(tmp_path, capsys):
    source = tmp_path / "downloads"
    source.mkdir()
    for name, data in FAKE.items():
        (source / name).write_bytes(data)
    assert main(["--version", "2.0", "--data_dir", str(tmp_path / "squad"), "--from", str(source)]) == 0
    out = capsys.readouterr().out
    assert f"train: {tmp_path / 'squad' / 'train-v2.0.json'}" in out
    assert (tmp_path / "squad" / "dev-v2.0.json").read_bytes() == FAKE["dev-v2.0.json"]


def test_cli_offline_exits_non_zero_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer(error=urllib.error.URLError("offline")))
    assert main(["--version", "2.0", "--data_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare-data: error: could not download") and err.count("\n") == 1
    assert prepare.SQUAD_URL + "dev-v2.0.json" in err and "--from DIR" in err
    assert listing(tmp_path) == []


def test_cli_rejects_unknown_versions(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--version", "3.0"])
    assert excinfo.value.code == 2 and "invalid choice" in capsys.readouterr().err
