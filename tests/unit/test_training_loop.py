"""The recipes' training loop: precision resolution and mixed-precision training that still learns."""
import pytest
import torch
import torch.nn.functional as F

from conceptlens.config import TrainConfig, load_config
from conceptlens.models.device import bf16_is_fast, resolve_precision
from conceptlens.recipes.loop import train_loop
from conceptlens.recipes.train_classifier import fit

CPU = torch.device("cpu")


def test_auto_follows_the_hardware_and_explicit_choices_win():
    assert resolve_precision("auto", CPU) == ("bf16" if bf16_is_fast(CPU) else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'.*auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def test_defaults_mix_precision_in_the_conv_trainings_but_not_in_text_alignment():
    cfg = load_config()
    assert cfg.classifier.train.precision == cfg.vlm.pretrain.precision == "auto"
    assert cfg.vlm.align.precision == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_learn_and_keep_float32_weights(precision):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    before = F.cross_entropy(model(x), y).item()
    seen_dtypes = set()

    def step(idx):
        logits = model(x[idx])
        seen_dtypes.add(logits.dtype)
        return F.cross_entropy(logits, y[idx])

    info = train_loop("t", len(x), TrainConfig(epochs=20, batch_size=64, lr=1e-2), model.parameters(), step,
                      device=CPU, log=lambda _: None, precision=precision)
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert info["precision"] == precision and info["epochs"] == 20
    assert seen_dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert after < before / 3


def test_fit_is_seeded_and_leaves_contiguous_weights():
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127.5).long()

    def trained():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 2))
        fit(model, images, lambda x, idx: F.cross_entropy(model(x), labels[idx]),
            TrainConfig(epochs=2, batch_size=16, precision="fp32"), device=CPU, seed=3, log=lambda _: None)
        return model

    a, b = trained(), trained()
    assert not a.training
    assert a[0].weight.is_contiguous()  # trained channels-last, saved in the usual layout
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("n, epochs", [(10, 1), (40, 1), (64, 3), (320, 1)])
def test_a_handful_of_steps_trains_too(n, epochs):
    """A small dataset (1 to 5 steps in all) trains at a sensible rate instead of failing in the schedule."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(2))
    target = torch.ones(2)
    info = train_loop("tiny", n, TrainConfig(epochs=epochs, batch_size=64, lr=0.1), [w],
                      lambda idx: F.mse_loss(w, target), device=CPU, log=lambda _: None)
    assert info["epochs"] == epochs and w.detach().gt(0).all()
