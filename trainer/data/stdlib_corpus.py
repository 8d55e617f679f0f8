"""The Python standard library's own sources as a code corpus, split train/validation by file.

It is present wherever Python is, needs no download, and is real code written by many people.
The split hashes each file's path relative to the stdlib root, so it is the same on every machine
with the same Python version and never puts one file on both sides.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envfarm.errors import EnvfarmError
from envfarm.trainer.tokenizer import BOS, EOS


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    root = root or stdlib_root()
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    if not files:
        raise EnvfarmError(f"no .py files under {root}", "run with a CPython that ships its standard library sources")
    return files


def is_validation(path: Path, root: Path, val_percent: int = 5) -> bool:
    digest = hashlib.sha1(str(path.relative_to(root)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < val_percent


@dataclass
class Corpus:
    train: np.ndarray  # token ids, uint16
    val: np.ndarray
    val_files: list[Path]

    def batch(self, split: str, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
        data = self.train if split == "train" else self.val
        starts = rng.integers(0, len(data) - length, size=batch)
        return np.stack([data[s:s + length] for s in starts]).astype(np.int64)


def _encode_files(files: list[Path]) -> np.ndarray:
    chunks = []
    for path in files:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.uint16)
        chunks.extend([np.array([BOS], dtype=np.uint16), raw, np.array([EOS], dtype=np.uint16)])
    return np.concatenate(chunks)


def load_stdlib_corpus(val_percent: int = 5, root: Path | None = None) -> Corpus:
    root = root or stdlib_root()
    files = stdlib_files(root)
    val_files = [p for p in files if is_validation(p, root, val_percent)]
    train_files = [p for p in files if not is_validation(p, root, val_percent)]
    return Corpus(train=_encode_files(train_files), val=_encode_files(val_files), val_files=val_files)


def unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Nats/token of the add-one smoothed unigram model fitted on train, measured on val: the floor to beat."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val].mean())
