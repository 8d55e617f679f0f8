"""Byte-level tokenizer: ids 0-255 are bytes, then BOS/EOS/PAD. Offline, lossless, no vocabulary file."""

from __future__ import annotations

from envfarm.errors import EnvfarmError

BOS, EOS, PAD = 256, 257, 258
SPECIAL = {BOS: "<bos>", EOS: "<eos>", PAD: "<pad>"}
VOCAB_SIZE = 264  # 259 used, rounded up to a multiple of 8


class ByteTokenizer:
    bos_id, eos_id, pad_id, vocab_size = BOS, EOS, PAD, VOCAB_SIZE

    def encode(self, text: str | bytes, bos: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return ([BOS] if bos else []) + list(data)

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        out = bytearray()
        for i in ids:
            if 0 <= i < 256:
                out.append(i)
            elif i in SPECIAL:
                if not skip_special:
                    out.extend(SPECIAL[i].encode())
            else:
                raise EnvfarmError(f"token id {i} is outside the byte tokenizer's vocabulary",
                                   f"use ids 0-255 or the specials {sorted(SPECIAL)}")
        return out.decode("utf-8", errors="replace")
