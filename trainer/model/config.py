"""The policy's architecture, read from a Hugging Face-style config.json.

One dataclass covers every size from the 2-core `tiny()` preset to the 309B reference
(`mimo_v2_flash()`), so tests on the tiny model exercise the same code paths as the real one.
The layer pattern is a per-layer list (never derived from a formula at run time) because the
reference's published counts do not pin down the indices: the config is the source of truth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envfarm.errors import EnvfarmError


def _default_hybrid_pattern(num_layers: int) -> list[int]:
    """1 = sliding window, 0 = global; global on layer 0 and on every 6th layer (as the HF port)."""
    return [0 if (i == 0 or (i + 1) % 6 == 0) else 1 for i in range(num_layers)]


@dataclass
class PolicyConfig:
    vocab_size: int = 152_576
    hidden_size: int = 4096
    intermediate_size: int = 16_384  # dense FFN width (layer 0 and the MTP blocks)
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 48
    hybrid_layer_pattern: list[int] = field(default_factory=list)  # per layer: 1 = SWA, 0 = GA
    moe_layer_freq: list[int] = field(default_factory=list)  # per layer: 1 = MoE, 0 = dense FFN
    num_attention_heads: int = 64  # GA
    num_key_value_heads: int = 4  # GA
    swa_num_attention_heads: int = 64
    swa_num_key_value_heads: int = 8
    head_dim: int = 192  # Q/K
    v_head_dim: int = 128
    sliding_window: int = 128
    rope_theta: float = 640_000.0  # GA
    swa_rope_theta: float = 10_000.0
    partial_rotary_factor: float = 0.334
    add_swa_attention_sink_bias: bool = True
    add_full_attention_sink_bias: bool = False
    attention_value_scale: float = 0.707
    n_routed_experts: int = 256
    num_experts_per_tok: int = 8
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 1e-5  # sequence-wise balance loss weight
    expert_bias_update_rate: float = 1e-3  # aux-loss-free balancing step on the router bias
    num_nextn_predict_layers: int = 3  # MTP blocks
    mtp_intermediate_size: int = 16_384
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    max_position_embeddings: int = 262_144
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    model_type: str = "mimo_v2_flash"

    def __post_init__(self) -> None:
        if not self.hybrid_layer_pattern:
            self.hybrid_layer_pattern = _default_hybrid_pattern(self.num_hidden_layers)
        if not self.moe_layer_freq:
            self.moe_layer_freq = [0] + [1] * (self.num_hidden_layers - 1)
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def rope_dim(self) -> int:
        """Rotated dims of each Q/K head: the leading partial_rotary_factor share, kept even."""
        dim = int(round(self.head_dim * self.partial_rotary_factor))
        return max(2, dim - dim % 2)

    def is_sliding(self, layer: int) -> bool:
        return self.hybrid_layer_pattern[layer] == 1

    def is_moe(self, layer: int) -> bool:
        return self.moe_layer_freq[layer] == 1

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.num_hidden_layers) if self.is_moe(i)]

    def validate(self) -> None:
        def bad(problem: str, fix: str) -> None:
            raise EnvfarmError(f"policy config: {problem}", fix)

        for name in ("hybrid_layer_pattern", "moe_layer_freq"):
            values = getattr(self, name)
            if len(values) != self.num_hidden_layers:
                bad(f"{name} has {len(values)} entries but num_hidden_layers is {self.num_hidden_layers}",
                    f"give {name} exactly one 0/1 entry per layer")
            if any(v not in (0, 1) for v in values):
                bad(f"{name} holds values other than 0 and 1: {sorted(set(values))}",
                    f"use 1/0 in {name} (1 = sliding window / MoE)")
        for q, kv, kind in ((self.num_attention_heads, self.num_key_value_heads, "global"),
                            (self.swa_num_attention_heads, self.swa_num_key_value_heads, "sliding")):
            if kv <= 0 or q % kv:
                bad(f"{kind} attention has {q} query heads and {kv} KV heads",
                    "make the query head count a positive multiple of the KV head count")
        if self.num_experts_per_tok > self.n_routed_experts:
            bad(f"num_experts_per_tok={self.num_experts_per_tok} exceeds n_routed_experts={self.n_routed_experts}",
                "choose top-k no larger than the number of experts")
        if self.rope_dim > self.head_dim:
            bad(f"partial_rotary_factor={self.partial_rotary_factor} rotates more dims than head_dim",
                "use a partial_rotary_factor in (0, 1]")
        if self.sliding_window < 1:
            bad(f"sliding_window={self.sliding_window}", "use a window of at least 1 token")

    # ---- Hugging Face-style config.json --------------------------------------------------
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> "PolicyConfig":
        """Read our fields; accept the transformers port's names (layer_types, mlp_layer_types) too."""
        data = dict(raw)
        if "hybrid_layer_pattern" not in data and data.get("layer_types"):
            data["hybrid_layer_pattern"] = [1 if t == "sliding_attention" else 0 for t in data["layer_types"]]
        if "moe_layer_freq" not in data and data.get("mlp_layer_types"):
            data["moe_layer_freq"] = [1 if t == "sparse" else 0 for t in data["mlp_layer_types"]]
        if isinstance(data.get("moe_layer_freq"), int):  # DeepSeek-style "every n-th layer"
            n = data["moe_layer_freq"]
            data["moe_layer_freq"] = [0] + [1 if i % n == 0 else 0 for i in range(1, data.get("num_hidden_layers", 48))]
        if isinstance(data.get("eos_token_id"), list):
            data["eos_token_id"] = data["eos_token_id"][0]
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EnvfarmError(f"policy config: {exc}", "check the field types in config.json") from exc

    def to_hf_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["architectures"] = ["MiMoV2FlashForCausalLM"]
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> "PolicyConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise EnvfarmError(f"no policy config at {path}", "point at a checkpoint folder holding config.json")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise EnvfarmError(f"{path} is not valid JSON ({exc})", "repair or regenerate config.json") from exc
        return cls.from_hf_dict(raw)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")


def mimo_v2_flash() -> PolicyConfig:
    """The reference size (309B total / 15B active), for shape checks on the meta device."""
    return PolicyConfig()


def tiny() -> PolicyConfig:
    """Same architecture, sized to pretrain in minutes on 2 CPU cores with the byte tokenizer."""
    return PolicyConfig(
        vocab_size=264,
        hidden_size=128,
        intermediate_size=384,
        moe_intermediate_size=128,
        num_hidden_layers=6,
        hybrid_layer_pattern=[0, 1, 1, 1, 1, 0],
        moe_layer_freq=[0, 1, 1, 1, 1, 1],
        num_attention_heads=4,
        num_key_value_heads=1,
        swa_num_attention_heads=4,
        swa_num_key_value_heads=2,
        head_dim=48,
        v_head_dim=32,
        sliding_window=64,
        rope_theta=640_000.0,
        swa_rope_theta=10_000.0,
        n_routed_experts=8,
        num_experts_per_tok=2,
        aux_loss_alpha=1e-3,
        num_nextn_predict_layers=3,
        mtp_intermediate_size=256,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )


def micro(**overrides: Any) -> PolicyConfig:
    """Smaller still, for unit tests: every feature on (SWA ring wraps after 8 tokens, 3 MTP heads)."""
    base = dict(
        vocab_size=264, hidden_size=32, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=4,
        hybrid_layer_pattern=[0, 1, 1, 0], moe_layer_freq=[0, 1, 1, 1], num_attention_heads=4,
        num_key_value_heads=1, swa_num_attention_heads=4, swa_num_key_value_heads=2, head_dim=12, v_head_dim=8,
        sliding_window=8, n_routed_experts=4, num_experts_per_tok=2, num_nextn_predict_layers=3,
        mtp_intermediate_size=64, tie_word_embeddings=True, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    base.update(overrides)
    return PolicyConfig(**base)
