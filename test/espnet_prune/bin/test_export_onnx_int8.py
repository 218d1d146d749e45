"""Deployment of an exported ESPnet model: ``export --onnx`` writes a frontend that onnxruntime
runs like PyTorch (also as the frontend of ESPnet's ``Speech2Text``), and ESPnet's own
``--quantize_asr_model`` quantizes every linear map of the compact frontend."""

import json
import subprocess
import sys

import editdistance
import pytest
import torch
import yaml

from espnet_prune import register
from espnet_prune.asr.frontend.onnx_export import OnnxFrontend, max_feature_diff
from espnet_prune.ssl.model import EmptyLinear
from espnet_prune.ssl.quantize import quantization_summary
from espnet_prune.utils.espeak import synthesize
from test.espnet_prune.asr.recipe_steps import training_config
from test.espnet_prune.conftest import make_batch, perturb_

#: End-to-end (ESPnet training runs): deselected by ``pytest -m "not slow"``, run by ``make test``.
pytestmark = pytest.mark.slow

TOKENS = ["<blank>", "<unk>", *"abcdefghijklmnopqrstuvwxyz'", "<space>", "<sos/eos>"]
PRUNING = {"units": ["conv", "head", "interm"], "target": 0.5}
SENTENCES = ("turn on the light", "play some music", "what time is it")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random tiny ASR experiment whose gates closed some units (every head of layer 1),
    exported with ``--onnx`` through the command line."""
    register()
    from espnet2.tasks.asr import ASRTask

    work = tmp_path_factory.mktemp("deploy")
    (work / "train.yaml").write_text(yaml.safe_dump(training_config(PRUNING)))
    (work / "tokens.txt").write_text("".join(token + "\n" for token in TOKENS))
    args = ASRTask.get_parser().parse_args(["--config", str(work / "train.yaml"), "--token_list",
                                            str(work / "tokens.txt"), "--output_dir", str(work)])
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    perturb_(model.frontend.encoder, 0)
    with torch.no_grad():
        for parameter in model.frontend.controller.gate_parameters():
            parameter.normal_(2.0, 3.0)
        model.frontend.controller.gates["head"]["1"].log_alpha.fill_(-20.0)
    exp = work / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), exp / "valid.acc.ave.pth")
    compact, onnx = exp / "valid.acc.ave.pruned.pth", exp / "frontend.onnx"
    subprocess.run([sys.executable, "-m", "espnet_prune.bin.export", "--train_config", exp / "config.yaml",
                    "--model_file", exp / "valid.acc.ave.pth", "--output", compact, "--onnx", onnx],
                   check=True, cwd=work)
    speech = [torch.from_numpy(synthesize(text, variant=variant))
              for text, variant in zip(SENTENCES, ("f2", "m3", None))]
    return {"exp": exp, "compact": compact, "onnx": onnx, "speech": speech}


def speech2text(exported, **kwargs):
    from espnet2.bin.asr_inference import Speech2Text

    return Speech2Text(asr_train_config=str(exported["exp"] / "config.yaml"),
                       asr_model_file=str(exported["compact"]), beam_size=2, ctc_weight=0.5, **kwargs)


def hypotheses(inference, speech):
    """The 1-best token ids per waveform (the tiny model has no tokenizer, so no text)."""
    return [inference(waveform)[0][2] for waveform in speech]


def test_export_writes_the_compact_frontend_to_onnx(exported):
    report = json.loads(exported["compact"].with_suffix(".json").read_text(encoding="utf-8"))
    assert report["onnx"]["path"] == str(exported["onnx"])
    assert report["onnx"]["max_abs_diff_torch_vs_onnxruntime"] < 1e-4
    frontend = speech2text(exported).asr_model.frontend
    assert frontend.controller is None and frontend.encoder.config.num_heads[1] == 0
    speech = exported["speech"]
    pair = torch.zeros(2, max(speech[0].numel(), speech[1].numel()))
    pair[0, :speech[0].numel()], pair[1, :speech[1].numel()] = speech[0], speech[1]
    batches = [make_batch((7000, 4100)), make_batch((20000,), seed=1),
               (pair, torch.tensor([speech[0].numel(), speech[1].numel()]))]
    assert max_feature_diff(frontend, exported["onnx"], batches) < 1e-4


def test_the_onnx_frontend_decodes_what_pytorch_decodes(exported):
    inference = speech2text(exported)
    expected = hypotheses(inference, exported["speech"])
    inference.asr_model.frontend = OnnxFrontend(exported["onnx"], threads=1)
    assert hypotheses(inference, exported["speech"]) == expected
    assert all(expected)


def test_quantize_asr_model_quantizes_every_linear_map_of_the_frontend(exported):
    fp32 = speech2text(exported)
    int8 = speech2text(exported, quantize_asr_model=True)
    before = quantization_summary(fp32.asr_model.frontend)
    after = quantization_summary(int8.asr_model.frontend)
    # Feature projection, 4 attention and 2 FFN projections per layer; layer 1 has no heads.
    assert before["float_linear"] == 1 + 6 + 2 and before["empty_linear"] == 4
    assert after == {"int8_linear": 9, "float_linear": 0, "empty_linear": 4, "conv": before["conv"]}
    assert any(isinstance(m, EmptyLinear) for m in int8.asr_model.frontend.modules())

    speech = exported["speech"][0][None]
    lengths = torch.tensor([speech.shape[1]])
    with torch.no_grad():
        expected, _ = fp32.asr_model.frontend(speech, lengths)
        actual, _ = int8.asr_model.frontend(speech, lengths)
        assert torch.isfinite(actual).all()
        relative = float((actual - expected).norm() / expected.norm())
        assert 0.0 < relative < 0.05, relative
        # The CTC posteriors of the whole quantized model pick the same tokens almost everywhere.
        encoded = [model.asr_model.encode(speech, lengths)[0] for model in (fp32, int8)]
        best = [model.asr_model.ctc.argmax(out) for model, out in zip((fp32, int8), encoded)]
    agreement = float((best[0] == best[1]).float().mean())
    assert agreement >= 0.9, agreement
    # The beam search's 1-best: the token error rate of int8 against fp32 stays small.
    fp32_tokens, int8_tokens = hypotheses(fp32, exported["speech"]), hypotheses(int8, exported["speech"])
    errors = sum(editdistance.eval(a, b) for a, b in zip(fp32_tokens, int8_tokens))
    assert errors / sum(map(len, fp32_tokens)) < 0.2, (fp32_tokens, int8_tokens)


def test_export_writes_the_int8_copy_it_chose(exported, tmp_path):
    """``--onnx_int8 fastest``: both int8 candidates checked on held-out speech and timed; the report
    records which was written and why. (This random 48-wide model's features move 20-30 % under
    either int8, hence the wide tolerance: the plumbing is tested here, the accuracy on
    wav2vec2-base by benchmark_deploy.)"""
    from espnet_prune.bin import export

    output, onnx = tmp_path / "compact.pth", tmp_path / "frontend.onnx"
    export.main(["--train_config", str(exported["exp"] / "config.yaml"), "--model_file",
                 str(exported["exp"] / "valid.acc.ave.pth"), "--output", str(output), "--onnx", str(onnx),
                 "--onnx_int8", "fastest", "--calibration", "synth:3", "--int8_tolerance", "0.5"])
    entry = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))["onnx"]["int8"]
    assert entry["path"] == str(tmp_path / "frontend.int8.onnx") and (tmp_path / "frontend.int8.onnx").is_file()
    assert entry["method"] in ("dynamic", "static") and entry["tolerance"] == 0.5
    assert sorted(entry["latency_ms"]) == ["dynamic", "fp32", "static"]
    assert entry["rel_l2_vs_fp32"][entry["method"]] <= 0.5 and "fastest int8 variant" in entry["reason"]
    frontend = speech2text(exported).asr_model.frontend
    int8 = OnnxFrontend(entry["path"], threads=1)
    speech = exported["speech"][0][None]
    lengths = torch.tensor([speech.shape[1]])
    with torch.no_grad():
        expected, _ = frontend(speech, lengths)
    actual, _ = int8(speech, lengths)
    assert float((actual - expected).norm() / expected.norm()) <= 0.5


def test_export_int8_options_are_checked(exported, tmp_path):
    from espnet_prune.bin import export

    base = ["--train_config", str(exported["exp"] / "config.yaml"), "--model_file",
            str(exported["exp"] / "valid.acc.ave.pth"), "--output", str(tmp_path / "compact.pth")]
    with pytest.raises(SystemExit, match="give --onnx F.onnx too"):
        export.main(base + ["--onnx_int8", "static"])
    with pytest.raises(SystemExit, match="neither synth:N nor an existing wav.scp"):
        export.main(base + ["--onnx", str(tmp_path / "f.onnx"), "--onnx_int8", "static", "--calibration", "nope"])
