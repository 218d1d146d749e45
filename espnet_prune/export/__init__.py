"""Export: the compact model of every size of a pruning run and its typed report.

``sizes`` decides whether a training config prunes and to which sizes; ``compact`` builds the
gated model once and compacts each size; ``experiment`` writes each as a standalone ESPnet
experiment directory (or one model file); ``report`` is the typed report export writes and the
demo, ``bin/size_results`` and the recipes read. ``espnet_prune.bin.export`` is the command line.
"""
