"""Loss-balancing and gradient-aggregation methods; each registers through
``pymtl_register_balancers``."""

from pymtl.balancers.base import Balancer, Needs, Weights

__all__ = ["Balancer", "Needs", "Weights"]
