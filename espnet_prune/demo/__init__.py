"""The offline demo: a synthetic eSpeak NG corpus, ESPnet's recipe stages, scoring and the report.

- :mod:`~espnet_prune.demo.corpus`: voice-assistant commands from templates, spoken by eSpeak NG
  voice variants, written as Kaldi data directories (ASR transcripts or SLURP-style intents)
  plus plenty of template text for the LM;
- :mod:`~espnet_prune.demo.scoring`: WER / CER / intent accuracy with ESPnet's text normalisation;
- :mod:`~espnet_prune.demo.pipeline`: the recipe stages, through ESPnet's binaries;
- :mod:`~espnet_prune.demo.report`: latency of every system in one run, ``results.json``,
  the table and the error-vs-MACs plot.

``python -m espnet_prune.bin.demo`` (``make demo``) runs it all.
"""
