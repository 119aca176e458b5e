"""The paper's numbers (Morris et al. 2025; docs/science.md#the-papers-numbers), shown beside
memcap's."""

from __future__ import annotations

PAPER_ALPHA_BF16 = 3.64  # fitted slope, bits per parameter
PAPER_MEAN_BPP = {"bf16": 3.51, "fp32": 3.83}  # mean of the 16 per-config ratios
PAPER_BPP_RANGE = (2.86, 4.23)  # 8L×d32 bf16 … 1L×d32 fp32
PRECISION_INDEX = {"bf16": 0, "fp32": 1}  # position in the (bf16, fp32) pairs below

# Per-config capacity in bits (bf16, fp32), V 2048, S 64.
PAPER_CAPACITY_BITS = {
    "L1-d32": (3.16e5, 3.39e5),
    "L1-d128": (1.69e6, 1.71e6),
    "L2-d128": (2.60e6, 2.66e6),
    "L4-d256": (1.30e7, 1.36e7),
    "L8-d256": (2.51e7, 2.71e7),
}

# Membership-inference validation table (F1 in %, loss attack, 64-token sequences):
# (model, params, N sequences, predicted, observed, observed ±)
PAPER_MIA_VALIDATION = [
    ("GPT-2 XL (d 1600, 48 layers)", 1_556_075_200, 170_654_583, 55, 54.61, 1.3),
    ("GPT-2 XL (d 1600, 48 layers)", 1_556_075_200, 76_795_021, 75, 71.08, 0.4),
    ("GPT-2 XL (d 1600, 48 layers)", 1_556_075_200, 18_851_574, 95, 95.85, 0.8),
    ("GPT-2 small shape (d 768, 12 layers)", 123_702_528, 13_566_442, 55, 53.44, 1.1),
    ("GPT-2 small shape (d 768, 12 layers)", 123_702_528, 6_104_935, 75, 65.69, 0.6),
    ("GPT-2 small shape (d 768, 12 layers)", 123_702_528, 1_498_634, 95, 97.98, 0.3),
]

# The membership law in its consistent form (docs/science.md#membership-law):
# F1(N/P) = ½·(1 + c1·σ(−c2·(N/P − c3))), N in 64-token sequences.
PAPER_MIA = {"c1": 1.34, "c2": 33.14, "c3": 0.034}
