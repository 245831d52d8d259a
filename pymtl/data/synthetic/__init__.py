"""The embedded ``synthetic`` dataset: analytic ray-cast scenes with exact labels [pymtl].

Reference: SPEC-data §3. Modules: :mod:`~.scene` (random scenes), :mod:`~.geometry` (rays,
intersections, normals), :mod:`~.textures`, :mod:`~.render` (casting and shading),
:mod:`~.labels`, :mod:`~.sample` (seeding, one sample), :mod:`~.targets` (task layouts, flips,
label noise, missing labels), :mod:`~.cache`, :mod:`~.config` (options, presets) and
:mod:`~.dataset` (the registered :class:`SyntheticScenes`).
"""

from pymtl.data.synthetic.config import PRESETS, TASK_NAMES, SyntheticConfig
from pymtl.data.synthetic.dataset import SyntheticScenes
from pymtl.data.synthetic.sample import GENERATOR_VERSION

__all__ = ["GENERATOR_VERSION", "PRESETS", "TASK_NAMES", "SyntheticConfig", "SyntheticScenes"]
