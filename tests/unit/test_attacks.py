"""Adversarial attacks against a tiny classifier trained in a second on a synthetic image task."""
import math

import pytest
import torch

from conceptlens.runtime.attacks import ATTACKS, attack_images, success_rate

pytest.importorskip("torchattacks")


def images(n, seed):
    """Two classes of 3×16×16 images in [0, 1]: class 1 has a brighter red channel."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    x = 0.5 + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    x[:, 0] += 0.03 * (labels.float()[:, None, None] - 0.5)
    return x.clamp(0, 1), labels


class Tiny(torch.nn.Module):
    """Normalisation inside the model, as the attack contract requires."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        z = torch.relu(self.conv((x - 0.5) / 0.1)).mean(dim=(2, 3))
        return self.head(z)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = Tiny()
    x, y = images(512, 0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.conv.bias.requires_grad_(False)  # a frozen parameter must stay frozen
    opt.zero_grad(set_to_none=True)
    test_x, test_y = images(128, 1)
    return model, test_x, test_y


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_stronger_attacks_hurt_more_and_stay_in_budget(trained):
    model, x, y = trained
    clean = accuracy(model, x, y)
    assert clean > 0.9
    acc = {}
    for attack, eps in [("fgsm", 2 / 255), ("fgsm", 8 / 255), ("pgd", 8 / 255), ("apgd", 8 / 255)]:
        adv = attack_images(model, x, y, attack, eps, steps=10)
        assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        acc[attack, eps] = accuracy(model, adv, y)
    assert acc["fgsm", 2 / 255] < clean
    assert acc["pgd", 8 / 255] < acc["fgsm", 2 / 255] - 0.2
    assert acc["pgd", 8 / 255] <= acc["fgsm", 8 / 255] + 0.02
    assert acc["apgd", 8 / 255] <= acc["fgsm", 2 / 255]


def test_success_rate_counts_flips_of_correct_predictions(trained):
    model, x, y = trained
    adv = attack_images(model, x, y, "pgd", 8 / 255)
    correct = accuracy(model, x, y) * len(y)
    still = ((model(adv).argmax(1) == y) & (model(x).argmax(1) == y)).sum().item()
    assert success_rate(model, x, adv, y) == pytest.approx(1 - still / correct)
    assert success_rate(model, x, x, y) == 0.0
    assert math.isnan(success_rate(model, x, adv, 1 - model(x).argmax(1)))


def test_attacks_are_deterministic_and_leave_the_model_as_it_was(trained):
    model, x, y = trained
    flags = [p.requires_grad for p in model.parameters()]
    assert flags == [True, False, True, True]
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = attack_images(model, x[:16], y[:16], "pgd", 4 / 255, seed=7)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    b = attack_images(model, x[:16], y[:16], "pgd", 4 / 255, seed=7)
    c = attack_images(model, x[:16], y[:16], "pgd", 4 / 255, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_bad_arguments_raise_value_errors(trained):
    model, x, y = trained
    assert set(ATTACKS) == {"fgsm", "pgd", "apgd"}
    with pytest.raises(ValueError, match="fgsm, pgd, apgd"):
        attack_images(model, x, y, "deepfool", 8 / 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack_images(model, x * 2, y, "fgsm", 8 / 255)
    with pytest.raises(ValueError):
        attack_images(model, x, y, "pgd", -0.1)
    assert torch.equal(attack_images(model, x, y, "pgd", 0.0), x)


def test_bf16_attacks_stay_in_budget_and_hurt_like_fp32(trained):
    """Mixed precision changes how gradients are computed, not what an attack achieves: the float32 image, its
    budget and (for PGD and APGD, which step on gradient signs) the damage stay."""
    model, x, y = trained
    for attack in ("fgsm", "pgd", "apgd"):
        full = attack_images(model, x, y, attack, 8 / 255, steps=10)
        mixed = attack_images(model, x, y, attack, 8 / 255, steps=10, precision="bf16")
        assert mixed.dtype == x.dtype and (mixed - x).abs().max() <= 8 / 255 + 1e-6
        assert abs(accuracy(model, mixed, y) - accuracy(model, full, y)) <= 0.05, attack
    with pytest.raises(ValueError, match="unknown precision"):
        attack_images(model, x, y, "pgd", 8 / 255, precision="half")
