"""Custom ops: each has a compiled kernel (``csrc/<op>/``), a ``torch.library`` registration that
works under ``torch.compile`` and autograd, and a pure-PyTorch ``<op>_reference``."""

from pymtl.ops.gram import gram, gram_reference

__all__ = ["gram", "gram_reference"]
