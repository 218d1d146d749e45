"""Decoding as the user runs it: the whole ``Speech2Text`` decode timed (:mod:`.decode_timing`),
random-weight model shapes to time it on (:mod:`.shapes`), and the best-path CTC decode
(:mod:`.ctc_greedy`)."""
