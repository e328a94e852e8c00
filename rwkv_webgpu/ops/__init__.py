"""One public function per op; each records dispatches of the kernel family of the same name."""

from .matmul import Product, matmul, matmul_group
from .norm import layer_norm
from .time_mix_v4 import time_mix_v4
from .time_mix_v5 import time_mix_v5
from .time_mix_v7 import time_mix_v7_decode, time_mix_v7_prepare, time_mix_v7_wkv
from .token_shift import norm_lora, norm_mix, token_mix, token_mix_lora

__all__ = [
    "Product",
    "layer_norm",
    "matmul",
    "matmul_group",
    "norm_lora",
    "norm_mix",
    "time_mix_v4",
    "time_mix_v5",
    "time_mix_v7_decode",
    "time_mix_v7_prepare",
    "time_mix_v7_wkv",
    "token_mix",
    "token_mix_lora",
]
