"""The LM pruning choices and the directory of a target, in one light module (no torch, no ESPnet).

``espnet_prune.bin.lm_prune`` offers these as its ``--criterion``, ``--method`` and
``--scheduler``; :mod:`~espnet_prune.lm.criteria`, :mod:`~espnet_prune.lm.methods` and
:mod:`~espnet_prune.lm.schedulers` implement them, and the demo checks its options against
them without importing ESPnet.
"""

#: Importance criteria (:mod:`espnet_prune.lm.criteria`): weight magnitude, or data-driven statistics.
CRITERIA = ("magnitude", "data")
#: Pruning methods (:mod:`espnet_prune.lm.methods`).
METHODS = ("unstructured", "structured", "lowrank")
#: Schedulers (:mod:`espnet_prune.lm.schedulers`): every target from the dense LM, or one run through all.
SCHEDULERS = ("oneshot", "incremental")


def target_name(target: float) -> str:
    """Directory name of a target: ``0.5`` -> ``target0.50``, ``0.125`` -> ``target0.125``."""
    text = f"{target:.2f}"
    return f"target{text if float(text) == target else repr(target)}"
