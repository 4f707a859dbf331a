"""MobileViT's numbers (Mehta & Rastegari, ICLR 2022), as claims."""

from .core import macs_claim, params_claim, register_claims

PAPER = "MobileViT (ICLR 2022)"
TIMM = "timm results CSV (benchmark-infer-amp-nchw-pt240-cu124-rtx4090), GMACs"
# timm's profiler also counts normalisation, activation and element-wise operations; this book counts the
# multiply-adds of convolutions and matrix multiplies only (lessons.measure), so it lands 2-3% lower.
COUNTING_RULE = (
    "timm's GMACs also count norms, activations and element-wise ops; this book counts conv and matmul "
    "multiply-adds only, about 2-3% fewer"
)

register_claims([
    params_claim("mobilevit.xxs.params", "mobilevit", f"{PAPER}, Fig. 6 / Table 4", "MobileViT-XXS parameters",
                 1.3, "mobilevit_xxs"),
    params_claim("mobilevit.xs.params", "mobilevit", f"{PAPER}, Fig. 6 / Table 4", "MobileViT-XS parameters",
                 2.3, "mobilevit_xs"),
    params_claim("mobilevit.s.params", "mobilevit", f"{PAPER}, Fig. 6 / Table 4", "MobileViT-S parameters",
                 5.6, "mobilevit_s"),
    params_claim("mobilevit.xxs.params_exact", "mobilevit", "timm mobilevit_xxs (port of the official weights)",
                 "MobileViT-XXS parameters, exact", 1_272_024, "mobilevit_xxs", unit="", decimals=0),
    params_claim("mobilevit.xs.params_exact", "mobilevit", "timm mobilevit_xs (port of the official weights)",
                 "MobileViT-XS parameters, exact", 2_317_848, "mobilevit_xs", unit="", decimals=0),
    params_claim("mobilevit.s.params_exact", "mobilevit", "timm mobilevit_s (port of the official weights)",
                 "MobileViT-S parameters, exact", 5_578_632, "mobilevit_s", unit="", decimals=0),
    macs_claim("mobilevit.xxs.macs", "mobilevit", TIMM, "MobileViT-XXS MACs at 256x256", 0.42, "mobilevit_xxs",
               (3, 256, 256), decimals=2, discrepancy=COUNTING_RULE),
    macs_claim("mobilevit.xs.macs", "mobilevit", TIMM, "MobileViT-XS MACs at 256x256", 1.05, "mobilevit_xs",
               (3, 256, 256), decimals=2, discrepancy=COUNTING_RULE),
    macs_claim("mobilevit.s.macs", "mobilevit", TIMM, "MobileViT-S MACs at 256x256", 2.03, "mobilevit_s",
               (3, 256, 256), decimals=2, discrepancy=COUNTING_RULE),
])
