"""Custom ops: each has a compiled kernel (``csrc/<op>/``), a ``torch.library`` registration that
works under ``torch.compile`` and autograd, and a pure-PyTorch ``<op>_reference``."""

from pymtl.ops.combine import combine, combine_reference
from pymtl.ops.graddrop import (
    graddrop,
    graddrop_combine,
    graddrop_combine_reference,
    graddrop_signed_sum,
    graddrop_signed_sum_reference,
)
from pymtl.ops.gram import gram, gram_reference
from pymtl.ops.pap import pap_attention, pap_diffuse, pap_diffuse_reference
from pymtl.ops.projection import (
    gradvac_weights,
    gradvac_weights_reference,
    pcgrad_weights,
    pcgrad_weights_reference,
)

__all__ = [
    "combine",
    "combine_reference",
    "graddrop",
    "graddrop_combine",
    "graddrop_combine_reference",
    "graddrop_signed_sum",
    "graddrop_signed_sum_reference",
    "gradvac_weights",
    "gradvac_weights_reference",
    "gram",
    "gram_reference",
    "pap_attention",
    "pap_diffuse",
    "pap_diffuse_reference",
    "pcgrad_weights",
    "pcgrad_weights_reference",
]
