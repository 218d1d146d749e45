"""The offline demo: a synthetic eSpeak NG corpus, ESPnet's recipe stages, scoring and the report.

The modules, in the one direction their imports go (settings -> layout -> steps -> recipe ->
modes -> pipeline, which adds the report):

- :mod:`~espnet_prune.demo.settings`: what to run (systems, LM prunings, sizes, every setting);
- :mod:`~espnet_prune.demo.layout`: where things are (asr.sh's directories, the decodings);
- :mod:`~espnet_prune.demo.steps`: the generic step scheduler (lanes, markers, progress);
- :mod:`~espnet_prune.demo.recipe`: the recipe object (timed processes, shared options, scoring);
- :mod:`~espnet_prune.demo.direct_mode` / :mod:`~espnet_prune.demo.recipe_mode`: the stages,
  as ESPnet's binaries in asr.sh's order or through ESPnet's own asr.sh / slu.sh;
- :mod:`~espnet_prune.demo.pipeline`: composes the steps of a run and the report;
- :mod:`~espnet_prune.demo.report`: latency of every system in one run, ``results.json``,
  the table and the error-vs-MACs plot;
- :mod:`~espnet_prune.demo.corpus`: voice-assistant commands from templates, spoken by eSpeak NG
  voice variants, written as Kaldi data directories (ASR transcripts or SLURP-style intents)
  plus plenty of template text for the LM;
- :mod:`~espnet_prune.demo.scoring`: WER / CER / intent accuracy with ESPnet's text normalisation.

``python -m espnet_prune.bin.demo`` (``make demo``) runs it all.
"""
