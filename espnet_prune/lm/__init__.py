"""Pruning ESPnet Transformer language models (NNLM pruning: criterion × method × scheduler).

Modules, one idea each:

- ``pruned_transformer_lm``: ``PrunedTransformerLM``, the ``lm: pruned_transformer``
  choice (per-layer heads and FFN widths, low-rank matrices, weight masks);
- ``layers``: its building blocks (masked, low-rank and prunable layers);
- ``criteria``: magnitude and data-driven importance (activation / gradient statistics);
- ``unstructured``, ``structured``, ``lowrank``: the three pruning methods;
- ``methods``: one pruning step (criterion × method) on an ESPnet LM;
- ``schedulers``: one-shot and incremental schedules;
- ``finetune``: fine-tuning between steps with ESPnet's LM trainer;
- ``experiment``, ``data``: LM experiments and text on disk;
- ``latency``, ``report``: beam-search scoring latency, perplexity, the report.

The command line is ``python -m espnet_prune.bin.lm_prune``.
"""
