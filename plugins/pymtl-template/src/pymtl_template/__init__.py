"""pymtl-template: the smallest real pymtl plugin, to copy.

It registers one balancer, the geometric loss strategy ``gls`` (Chennupati et al., CVPR-W
2019) [P], through the hook every pymtl plugin implements. pymtl finds this module through
the entry point ``template = "pymtl_template"`` in group ``pymtl`` of ``pyproject.toml``.
"""

from __future__ import annotations

import pymtl
from pymtl_template.gls import GeometricLoss, GeometricLossConfig

__all__ = ["GeometricLoss", "GeometricLossConfig", "pymtl_register_balancers"]


@pymtl.hookimpl
def pymtl_register_balancers() -> list[type[pymtl.Balancer]]:
    """pymtl hook: the balancers this plugin provides."""
    return [GeometricLoss]
