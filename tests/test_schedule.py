import pytest

from hubertkit.train.schedule import polynomial_decay


def test_warmup_then_linear_decay():
    lr, warm, total = 5e-4, 100, 1000
    assert polynomial_decay(0, lr, warm, total) == 0.0  # fairseq's first update
    assert polynomial_decay(1, lr, warm, total) == pytest.approx(lr / warm)
    assert polynomial_decay(0, lr, 0, total) == lr  # no warm-up: the full rate at once
    assert polynomial_decay(50, lr, warm, total) == pytest.approx(lr / 2)
    assert polynomial_decay(100, lr, warm, total) == pytest.approx(lr)
    assert polynomial_decay(550, lr, warm, total) == pytest.approx(lr / 2)
    assert polynomial_decay(1000, lr, warm, total) == 0.0
    assert polynomial_decay(550, lr, warm, total, end_lr=1e-5, power=2.0) == pytest.approx((lr - 1e-5) * 0.25 + 1e-5)
