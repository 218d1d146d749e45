"""ESPnet's ``asr_inference`` with one more decoding option: ``ctc_greedy``, the CTC best path.

    python -m espnet_prune -m espnet2.bin.asr_inference --config conf/decode_asr_ctc.yaml ...
    # conf/decode_asr_ctc.yaml: beam_size: 1, ctc_weight: 1.0, ctc_greedy: true

asr.sh's stage 12 always runs ``${python} -m espnet2.bin.asr_inference``; under the launcher
(``--python "python3 -m espnet_prune"``) that module is this one, which takes every option of
ESPnet's (its parser, extended) and, without ``ctc_greedy`` (the default), hands them to ESPnet's
``inference`` unchanged. With ``--ctc_greedy true`` (or ``ctc_greedy: true`` in the decode
config) each utterance is decoded by the best path of the CTC posteriors
(:class:`~espnet_prune.inference.ctc_greedy.CTCBestPath`) instead of ESPnet's beam search, and
the same files are written (``<output_dir>/1best_recog/{text,token,token_int,score}``), which
stage 13 scores. It needs what the best path means: ``beam_size 1``, ``ctc_weight 1.0``,
``nbest 1``, no LM or n-gram, batch 1; other settings are refused with the option named.
"""

import logging
import sys
from typing import Any, Dict, List, Optional

from espnet.utils.cli_utils import get_commandline_args
from espnet2.bin import asr_inference as espnet_asr_inference
from espnet2.utils.types import str2bool

#: Option values the best path requires (name -> required value).
REQUIRED = {"beam_size": 1, "ctc_weight": 1.0, "nbest": 1, "batch_size": 1, "lm_train_config": None,
            "lm_file": None, "ngram_file": None, "word_lm_train_config": None, "word_lm_file": None,
            "transducer_conf": None, "streaming": False, "enh_s2t_task": False, "multi_asr": False,
            "hugging_face_decoder": False, "time_sync": False, "partial_ar": False}


def get_parser():
    """ESPnet's ``asr_inference`` parser plus ``--ctc_greedy``."""
    parser = espnet_asr_inference.get_parser()
    group = parser.add_argument_group("Best-path CTC decoding (espnet_prune)")
    group.add_argument("--ctc_greedy", type=str2bool, default=False,
                       help="decode by the best path of the CTC posteriors (argmax per frame, repeats merged, "
                            "blanks dropped) instead of beam search; needs beam_size 1, ctc_weight 1.0, no LM")
    return parser


def check_greedy_options(kwargs: Dict[str, Any]) -> None:
    """Refuse options the best path cannot honour, naming them."""
    wrong = [f"{key}={kwargs.get(key)!r} (needs {value!r})" for key, value in REQUIRED.items()
             if kwargs.get(key, value) != value]
    if wrong:
        raise ValueError("ctc_greedy: " + ", ".join(wrong))


def greedy_inference(**kwargs) -> None:
    """``asr_inference``'s ``inference`` (same keyword arguments), decoding by the CTC best path."""
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    from espnet_prune.inference.ctc_greedy import CTCBestPath

    check_greedy_options(kwargs)
    if kwargs["ngpu"] > 1:
        raise ValueError("ctc_greedy: only single-GPU decoding is supported (ngpu <= 1)")
    logging.basicConfig(level=kwargs["log_level"],
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    set_all_random_seed(kwargs["seed"])
    s2t_keys = ("asr_train_config", "asr_model_file", "token_type", "bpemodel", "maxlenratio", "minlenratio",
                "dtype", "beam_size", "ctc_weight", "lm_weight", "penalty", "nbest", "quantize_asr_model",
                "quantize_modules", "quantize_dtype", "prompt_token_file")
    speech2text = espnet_asr_inference.Speech2Text.from_pretrained(
        model_tag=kwargs["model_tag"], device="cuda" if kwargs["ngpu"] >= 1 else "cpu",
        **{key: kwargs[key] for key in s2t_keys})
    decoder = CTCBestPath(speech2text)
    logging.info("Decoding by the best path of the CTC posteriors (ctc_greedy)")
    loader = ASRTask.build_streaming_iterator(
        kwargs["data_path_and_name_and_type"], dtype=kwargs["dtype"], batch_size=1, key_file=kwargs["key_file"],
        num_workers=kwargs["num_workers"],
        preprocess_fn=ASRTask.build_preprocess_fn(speech2text.asr_train_args, False),
        collate_fn=ASRTask.build_collate_fn(speech2text.asr_train_args, False),
        allow_variable_data_keys=kwargs["allow_variable_data_keys"], inference=True)
    with DatadirWriter(kwargs["output_dir"]) as writer:
        for keys, batch in loader:
            speech = batch["speech"][0]
            text, token, token_int, hyp = decoder(speech)[0]
            best = writer["1best_recog"]
            best["token"][keys[0]] = " ".join(token)
            best["token_int"][keys[0]] = " ".join(map(str, token_int))
            best["score"][keys[0]] = str(hyp.score)
            if text is not None:
                best["text"][keys[0]] = text


def inference(ctc_greedy: bool = False, **kwargs) -> None:
    """ESPnet's ``inference`` (``ctc_greedy`` false) or :func:`greedy_inference`."""
    if ctc_greedy:
        greedy_inference(**kwargs)
    else:
        espnet_asr_inference.inference(**kwargs)


def main(cmd: Optional[List[str]] = None) -> None:
    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)
    kwargs = vars(args)
    kwargs.pop("config", None)
    try:
        inference(**kwargs)
    except ValueError as error:
        if str(error).startswith("ctc_greedy:"):
            raise SystemExit(f"asr_inference: {error}") from None
        raise


if __name__ == "__main__":
    main()
