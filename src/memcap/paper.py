"""The paper's numbers (Morris et al. 2025; SCIENCE.md §3), shown beside memcap's."""

from __future__ import annotations

PAPER_ALPHA_BF16 = 3.64  # fitted slope, bits per parameter
PAPER_MEAN_BPP = {"bf16": 3.51, "fp32": 3.83}  # mean of the 16 per-config ratios
PAPER_BPP_RANGE = (2.86, 4.23)  # 8L×d32 bf16 … 1L×d32 fp32

# Per-config capacity in bits (bf16, fp32), V 2048, S 64.
PAPER_CAPACITY_BITS = {
    "L1-d32": (3.16e5, 3.39e5),
    "L1-d128": (1.69e6, 1.71e6),
    "L2-d128": (2.60e6, 2.66e6),
    "L4-d256": (1.30e7, 1.36e7),
    "L8-d256": (2.51e7, 2.71e7),
}
