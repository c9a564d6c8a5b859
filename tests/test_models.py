"""The PyTorch reference: fatchord compatibility, checkpoints, the demo model's realism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waveopt.demo_data import demo_mels, demo_prev_samples
from waveopt.errors import WaveoptError
from waveopt.models import HParams, WaveRNN, demo_model, gate_statistics
from waveopt.models.checkpoint import hparams_from_state_dict, load_checkpoint
from waveopt.models.demo import entropy_bits

# fatchord's parameter names for a 2-block model with upsample (5, 5, 11).
FATCHORD_KEYS = {
    "upsample.resnet.conv_in.weight", "upsample.resnet.batch_norm.weight", "upsample.resnet.batch_norm.bias",
    "upsample.resnet.batch_norm.running_mean", "upsample.resnet.batch_norm.running_var",
    "upsample.resnet.batch_norm.num_batches_tracked", "upsample.resnet.conv_out.weight",
    "upsample.resnet.conv_out.bias", "upsample.up_layers.1.weight", "upsample.up_layers.3.weight",
    "upsample.up_layers.5.weight", "I.weight", "I.bias", "rnn1.weight_ih_l0", "rnn1.weight_hh_l0",
    "rnn1.bias_ih_l0", "rnn1.bias_hh_l0", "rnn2.weight_ih_l0", "rnn2.weight_hh_l0", "rnn2.bias_ih_l0",
    "rnn2.bias_hh_l0", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias", "step",
} | {f"upsample.resnet.layers.{i}.{p}" for i in range(2) for p in (
    "conv1.weight", "conv2.weight", "batch_norm1.weight", "batch_norm1.bias", "batch_norm1.running_mean",
    "batch_norm1.running_var", "batch_norm1.num_batches_tracked", "batch_norm2.weight", "batch_norm2.bias",
    "batch_norm2.running_mean", "batch_norm2.running_var", "batch_norm2.num_batches_tracked")}


def test_parameter_names_are_fatchords():
    model = WaveRNN(HParams(res_blocks=2))
    assert set(model.state_dict()) == FATCHORD_KEYS


@pytest.mark.parametrize("name", ["raw", "mol", "odd"])
def test_state_dict_round_trip_is_strict_and_exact(name, models, tmp_path):
    model = models(name)
    path = tmp_path / "weights.pyt"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.hp == model.hp
    mels = torch.from_numpy(demo_mels(2, seed=2))
    prev = torch.from_numpy(demo_prev_samples(2 * model.hop_length, seed=2))
    assert torch.equal(loaded.teacher_forced_logits(mels, prev), model.teacher_forced_logits(mels, prev))


def test_wrapped_checkpoint_and_overrides(models, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state": models("raw").state_dict(), "optimizer_state": {}}, path)
    assert load_checkpoint(path, sample_rate=16000).hp.sample_rate == 16000


def test_checkpoint_errors_are_one_clear_message(models, tmp_path):
    state = models("raw").state_dict()
    del state["fc2.bias"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(WaveoptError, match="does not fit a fatchord WaveRNN"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(WaveoptError, match="no fatchord WaveRNN state_dict"):
        load_checkpoint(path)


def test_hparams_are_read_from_weights():
    hp = HParams(mode="raw", bits=10, rnn_dims=200, fc_dims=136, res_out_dims=96, feat_dims=40,
                 compute_dims=24, res_blocks=3, pad=1, upsample_factors=(4, 4, 4))
    assert hparams_from_state_dict(WaveRNN(hp).state_dict()) == hp
    assert hparams_from_state_dict(WaveRNN(HParams(mode="mol")).state_dict()).mode == "mol"


def test_generate_is_deterministic_given_noise(models):
    model = models("raw")
    mels = torch.from_numpy(demo_mels(2, seed=1))
    noise = torch.rand(550, 1, 2)
    a, b = model.generate(mels, noise), model.generate(mels, noise)
    np.testing.assert_array_equal(a, b)
    other = model.generate(mels, torch.rand(550, 1, 2))
    assert not np.array_equal(a, other)


def test_demo_model_activations_look_trained():
    """The default-size demo model, on mels it was not calibrated on.

    GRU gate pre-activations: spread (std 1-2.5) with few saturated (|pre| > 4) and few
    vanishing (|pre| < 0.05) values; the RAW output distribution is peaked but not
    degenerate (entropy between 0.5 and 6 bits of the 9).
    """
    model = demo_model()
    mels = torch.from_numpy(demo_mels(6, batch=2, seed=11))
    prev = torch.from_numpy(demo_prev_samples(6 * 275, batch=2, seed=11))
    for name, stats in gate_statistics(model, mels, prev).items():
        assert 1.0 < stats["std"] < 2.5, (name, stats)
        assert stats["saturated"] < 0.06, (name, stats)
        assert stats["vanishing"] < 0.06, (name, stats)
    assert 0.5 < entropy_bits(model.teacher_forced_logits(mels, prev)) < 6.0
    # A plain default init is what the calibration fixes: its gates barely move.
    torch.manual_seed(0)
    plain = WaveRNN().eval()
    assert max(s["std"] for s in gate_statistics(plain, mels, prev).values()) < 0.6
