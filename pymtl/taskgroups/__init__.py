"""Which tasks should be learned together: Standley et al. (ICML 2020) network selection.

Reference: SPEC-methods §4 [S][C:tstandley/taskgrouping]. Candidate networks (task subsets on
full- and half-size encoders) are trained by :mod:`~pymtl.taskgroups.training` (``pymtl group
train``; imported on its own, it pulls in the training engine) and their per-task losses
written to candidate files (:mod:`~pymtl.taskgroups.candidates`); :func:`select` picks, for
each inference budget, the set of networks with the lowest total loss by an exact branch and bound
(:mod:`~pymtl.taskgroups.select`), optionally on HOA predictions
(:mod:`~pymtl.taskgroups.hoa`) or early-stopping losses, and
:mod:`~pymtl.taskgroups.report` turns the result into Table 4, Figure 5 and grouping files
for ``pymtl train --arch branched --grouping FILE``; :mod:`~pymtl.taskgroups.affinity` gives
Tables 1–2. The command line is ``pymtl group train`` / ``select`` / ``affinity``.

Example:
    >>> from pymtl.taskgroups import read_candidates, select  # doctest: +SKIP
    >>> cset = read_candidates("candidates.toml")  # doctest: +SKIP
    >>> for s in select(cset, split="val", score_split="test"):  # doctest: +SKIP
    ...     print(s.message)
"""

from __future__ import annotations

from pymtl.taskgroups.affinity import (
    AffinityTables,
    affinity_tables,
    format_affinity,
    plot_affinity,
)
from pymtl.taskgroups.candidates import (
    Candidate,
    CandidateFormatError,
    CandidateSet,
    read_candidates,
    write_candidates,
)
from pymtl.taskgroups.hoa import hoa_candidates
from pymtl.taskgroups.merge import merge_candidates
from pymtl.taskgroups.reference import (
    BruteForceResult,
    requirements_rule,
    select_brute_force,
    select_reference,
    sum_rule,
)
from pymtl.taskgroups.report import (
    format_details,
    format_summary,
    plot_selection,
    write_groupings,
)
from pymtl.taskgroups.results import STATUSES, Selection, method_label, select
from pymtl.taskgroups.select import (
    SelectionError,
    default_budgets,
    requirement_vector,
    select_many,
    select_networks,
)

__all__ = [
    "STATUSES",
    "AffinityTables",
    "BruteForceResult",
    "Candidate",
    "CandidateFormatError",
    "CandidateSet",
    "Selection",
    "SelectionError",
    "affinity_tables",
    "default_budgets",
    "format_affinity",
    "format_details",
    "format_summary",
    "hoa_candidates",
    "merge_candidates",
    "method_label",
    "plot_affinity",
    "plot_selection",
    "read_candidates",
    "requirement_vector",
    "requirements_rule",
    "select",
    "select_brute_force",
    "select_many",
    "select_networks",
    "select_reference",
    "sum_rule",
    "write_candidates",
    "write_groupings",
]
