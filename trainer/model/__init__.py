"""The MoE policy with hybrid SWA/GA attention and MTP heads (MiMo-V2-Flash architecture)."""

from envfarm.trainer.model.checkpoint import load_checkpoint, save_checkpoint
from envfarm.trainer.model.config import PolicyConfig, micro, mimo_v2_flash, tiny
from envfarm.trainer.model.logprobs import gather_logprobs, token_logprobs
from envfarm.trainer.model.policy_model import ModelOutput, PolicyModel

__all__ = ["PolicyConfig", "PolicyModel", "ModelOutput", "tiny", "micro", "mimo_v2_flash", "save_checkpoint",
           "load_checkpoint", "token_logprobs", "gather_logprobs"]
