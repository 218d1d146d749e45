"""The report's pieces that need no trained model: int8 agreement, the multi-size comparison."""

import pytest

from espnet_prune.demo.report import collect_multisize, format_int8, format_multisize, identical_hypotheses
from espnet_prune.demo.settings import DemoSettings, System, parse_system


def test_int8_agreement_counts_identical_hypotheses(tmp_path):

    (tmp_path / "fp32").write_text("u1 turn on the light\nu2 stop\nu3 go\n")
    (tmp_path / "int8").write_text("u1 turn on the light\nu2 stop now\n")
    assert identical_hypotheses(tmp_path / "fp32", tmp_path / "int8") == (1, 3)  # u3 missing: different
    lines = format_int8("asr", {"entries": [dict(
        name="hj_macs_0.50", utterances=3, identical=1, agreement=1 / 3, fp32={"wer": 0.2, "cer": 0.1},
        int8={"wer": 0.25, "cer": 0.1}, change={"wer": 0.05, "cer": 0.0},
        frontend_modules={"int8_linear": 19, "float_linear": 0, "empty_linear": 0, "conv": 8})]})
    assert "1/3 (33%)" in lines[-1] and "+5.0%" in lines[-1] and "19/19" in lines[-1]
    assert format_int8("asr", None) == []


def _entry(name, method, target, wer, macs_ratio, training=None, **extra):
    return dict(name=name, method=method, target=target, wer=wer, cer=wer / 2, macs=int(1000 * macs_ratio),
                macs_ratio=macs_ratio, params=int(500 * macs_ratio), params_ratio=macs_ratio, expected_ratio=None,
                latency_ms=1.0, training=training, **extra)


def test_the_report_sets_each_size_beside_the_separate_run_and_sums_their_training_time():

    system = parse_system("hj_macs_multi:0.8/0.6")
    settings = DemoSettings(systems=(System("hj_macs", 0.8), System("hj_macs", 0.6), system),
                            fusion_system="hj_macs_0.80")
    one_run = dict(wall_seconds=100.0, cpu_seconds=90.0, steps=1000)
    entries = [_entry("hj_macs_0.80", "hj_macs", 0.8, 0.20, 0.79, dict(wall_seconds=70.0, cpu_seconds=60.0, steps=600)),
               _entry("hj_macs_0.60", "hj_macs", 0.6, 0.25, 0.61, dict(wall_seconds=80.0, cpu_seconds=70.0, steps=600)),
               _entry(system.sizes[0].name, system.method, 0.8, 0.22, 0.80, one_run, step=500),
               _entry(system.sizes[1].name, system.method, 0.6, 0.24, 0.60, one_run, step=1000)]
    (comparison,) = collect_multisize(settings, entries)
    first, second = comparison["sizes"]
    assert first["one_run"]["name"] == system.sizes[0].name and first["separate"]["name"] == "hj_macs_0.80"
    assert first["difference"]["wer"] == pytest.approx(0.02) and second["difference"]["wer"] == pytest.approx(-0.01)
    assert first["one_run"]["macs_ratio"] == 0.80 and first["separate"]["macs_ratio"] == 0.79
    training = comparison["training"]
    assert training["one_run"] == one_run and training["complete"]
    assert training["separate"] == dict(wall_seconds=150.0, cpu_seconds=130.0, steps=1200)
    assert training["ratio"]["cpu_seconds"] == pytest.approx(90 / 130)
    assert comparison["schedule"]["total_steps"] == 2 * (200 + 200)
    lines = format_multisize("asr", [comparison])
    assert any(line.startswith("| 0.80 | 22.0 % | 80.0 % |") and line.endswith("| +2.0 |") for line in lines)
    assert any(line.startswith("| separate runs (hj_macs_0.80, hj_macs_0.60) | 1200 | 2m30s | 2m10s |")
               for line in lines)
    # Without a separate run at a target, the sum covers the others and says so.
    (partial,) = collect_multisize(settings, [entries[0]] + entries[2:])
    assert partial["sizes"][1]["separate"] is None and not partial["training"]["complete"]
    assert any("sum covers those that have one" in line for line in format_multisize("asr", [partial]))
    assert collect_multisize(DemoSettings(), entries[:2]) is None and format_multisize("asr", None) == []


def test_latency_is_the_whole_decode_of_each_system(tmp_path, monkeypatch):
    """Each system becomes ESPnet's Speech2Text under the recipe's decode config and the demo's
    beam, and its latency is what the whole-decode timer measured for it (the timer itself is
    replaced: its times are given, so nothing here depends on the machine's speed)."""
    import torch
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.tasks.asr import ASRTask

    from espnet_prune.demo import report
    from espnet_prune.inference import shapes
    from espnet_prune.inference.decode_timing import DecodeSystem, read_decode_config
    from test.espnet_prune.ssl.tiny import tiny_config

    systems = []
    for name, layers in (("deep", 3), ("shallow", 1)):
        config = shapes.write_train_config(shapes.train_config("ctc", tiny_config(num_layers=layers).to_dict(),
                                                               vocabulary=10, small=True),
                                           tmp_path / name / "config.yaml")
        model, _ = ASRTask.build_model_from_file(str(config), None, "cpu")
        torch.save(model.state_dict(), tmp_path / name / "model.pth")
        systems.append(DecodeSystem(name, config, tmp_path / name / "model.pth"))
    seen = {}

    def fake_time_decodes(decoders, utterances, rounds, warmup):
        for name, decoder in decoders.items():
            seen[name] = (decoder, decoder(utterances[0]), rounds, warmup)
        return {"deep": {"decode_s": 0.25, "frontend_s": 0.1}, "shallow": {"decode_s": 0.125, "frontend_s": 0.05}}, {}

    monkeypatch.setattr(report, "time_decodes", fake_time_decodes)
    decode_config = read_decode_config("egs2/espeak_demo/asr1/conf/decode_asr.yaml", {"beam_size": 2})
    latency = report.decode_latency("asr", systems, decode_config, 0.1 * torch.randn(1, 8000), rounds=3)
    assert latency == {"deep": {"decode_ms": 250.0, "frontend_ms": 100.0},
                       "shallow": {"decode_ms": 125.0, "frontend_ms": 50.0}}
    for name, layers in (("deep", 3), ("shallow", 1)):
        decoder, result, rounds, warmup = seen[name]
        assert isinstance(decoder, Speech2Text) and decoder.beam_search.beam_size == 2
        assert decoder.asr_model.frontend.encoder.config.num_layers == layers
        assert (rounds, warmup) == (3, report.WARMUP_ROUNDS) and len(result) == 1
