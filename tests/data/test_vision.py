"""Vision: CNN/ResNet shapes and switches, Zhang et al. corruptions, augmentation, CIFAR-10 files
and checksums, vectorized seed ensembles, and random-label memorization on real MNIST."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from whylearn.data.base import InMemoryDataModule, Split
from whylearn.data.corruptions import CorruptionMixin, corrupt_splits
from whylearn.models import CNN, MLP, ResNet, VmapEnsemble


# -- models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda: CNN(3, 10, k=4), (2, 3, 32, 32)),
    (lambda: CNN(1, 7, k=2), (2, 1, 28, 28)),
    (lambda: ResNet(3, 10, arch="preact18", depth=18, width=2), (2, 3, 32, 32)),
    (lambda: ResNet(1, 10, arch="preact18", width=2), (2, 1, 28, 28)),
    (lambda: ResNet(3, 10, arch="cifar", depth=20), (2, 3, 32, 32)),
    (lambda: ResNet(3, 100, arch="cifar", depth=56, width=4, shortcut=False, norm="none"), (2, 3, 32, 32)),
])
def test_model_output_shapes(make, shape):
    model = make()
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], model.num_classes)
    with pytest.raises(ValueError, match="expects images"):
        model(torch.randn(shape[0], shape[1] + 1, *shape[2:]))


def test_reference_parameter_counts():
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert abs(count(ResNet(3, 10, arch="preact18", width=64)) - 11.17e6) < 0.01e6  # ResNet18 (He et al. 2016b)
    assert abs(count(ResNet(3, 10, arch="cifar", depth=20)) - 0.27e6) < 0.005e6  # ResNet-20 (He et al. 2016a, Table 6)
    assert abs(count(ResNet(3, 10, arch="cifar", depth=56)) - 0.85e6) < 0.01e6  # ResNet-56


def test_shortcut_and_norm_switches_change_structure():
    def kinds(m):
        return {type(x).__name__ for x in m.modules()}
    full = ResNet(3, 10, arch="cifar", depth=20, width=4)
    plain = ResNet(3, 10, arch="cifar", depth=20, width=4, shortcut=False)
    nonorm = ResNet(3, 10, arch="cifar", depth=20, width=4, norm="none")
    assert all(b.shortcut is not None for b in full.blocks) and "PadShortcut" in kinds(full)
    assert all(b.shortcut is None for b in plain.blocks) and "PadShortcut" not in kinds(plain)
    assert "BatchNorm2d" in kinds(full) and "BatchNorm2d" not in kinds(nonorm)
    assert all(c.bias is not None for c in nonorm.modules() if isinstance(c, nn.Conv2d))
    # the switch changes the function too: same weights, with and without the skip connections
    torch.manual_seed(0)
    plain.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(full.eval()(x), plain.eval()(x))
    pre = ResNet(3, 10, arch="preact18", width=4)
    pre_plain = ResNet(3, 10, arch="preact18", width=4, shortcut=False)
    assert sum(isinstance(m, nn.Conv2d) for m in pre.modules()) == 17 + 3  # 17 convs + 3 projection shortcuts
    assert sum(isinstance(m, nn.Conv2d) for m in pre_plain.modules()) == 17
    assert "BatchNorm2d" not in kinds(CNN(3, 10, k=2, norm="none"))
    for bad in (dict(arch="vgg"), dict(norm="layer"), dict(arch="cifar", depth=18), dict(arch="preact18", depth=34)):
        with pytest.raises(ValueError, match="allowed|depth"):
            ResNet(3, 10, **bad)


def test_torchvision_factory_is_optional():
    from whylearn.models import torchvision_model

    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="torchvision"):
            torchvision_model("resnet18")
    else:
        assert torchvision_model("resnet18", num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


# -- corruptions ----------------------------------------------------------------------------------
class ToyImages(CorruptionMixin, InMemoryDataModule):
    """Images whose label is written in their pixels, so label/image dependence is measurable."""

    num_classes = 10
    name = "toy"

    def __init__(self, n=2000, **kw):
        super().__init__(**kw)
        self.n = n

    def load_splits(self):
        g = torch.Generator().manual_seed(123)
        y = torch.randint(0, 10, (self.n,), generator=g)
        x = torch.rand(self.n, 3, 8, 8, generator=g)
        x[:, 0, 0, 0] = y.float()  # the label, readable from the image
        return {"train": Split(x, y), "test": Split(x[:500].clone(), y[:500].clone())}


def test_random_labels_are_independent_of_the_images():
    dm = ToyImages(corruption="random", val_size=0, seed=1)
    dm.setup()
    clean = dm.clean_train_targets
    # labels agree with the truth at chance rate, and each class is used
    assert abs((dm.train.y == clean).float().mean().item() - 0.1) < 0.03
    assert torch.bincount(dm.train.y, minlength=10).min() > 120
    # the labels are a function of the seed alone: other images, same labels
    other = corrupt_splits(Split(torch.randn_like(dm.train.x), clean.flip(0)), {}, "random", 0.0, 10, seed=1)[0]
    assert torch.equal(other.y, dm.train.y)
    # inputs and test labels untouched
    ref = ToyImages(val_size=0, seed=1)
    ref.setup()
    assert torch.equal(dm.test.y, ref.test.y)
    assert torch.equal(dm.train.x[:, 0, 0, 0].long(), clean)


def test_shuffled_pixels_use_one_permutation_and_random_pixels_many():
    dm = ToyImages(corruption="shuffled_pixels", val_size=0, seed=2)
    dm.setup()
    ref = ToyImages(val_size=0, seed=2)
    ref.setup()
    perm = dm.corruption_info["pixel_permutation"]
    assert sorted(perm.tolist()) == list(range(64)) and not torch.equal(perm, torch.arange(64))
    flat, orig = dm.train.x.flatten(2), ref.train.x.flatten(2)
    assert torch.equal(flat, orig[:, :, perm])  # the same permutation for every image and channel
    assert torch.equal(dm.test.x.flatten(2), ref.test.x.flatten(2)[:, :, perm])  # and for the test split
    assert torch.equal(dm.train.y, ref.train.y)
    rnd = ToyImages(corruption="random_pixels", val_size=0, seed=2)
    rnd.setup()
    # every image keeps its own multiset of pixel values but the orders differ between images
    assert torch.equal(rnd.train.x.flatten(2).sort(-1).values, orig.sort(-1).values)
    def permutation(i, c):  # sigma with corrupted[i, c] = original[i, c][sigma]
        sigma = torch.empty(64, dtype=torch.long)
        sigma[torch.argsort(rnd.train.x[i, c].flatten())] = torch.argsort(orig[i, c])
        return tuple(sigma.tolist())

    assert len({permutation(i, 1) for i in range(5)}) == 5  # a new permutation per image
    assert all(permutation(i, 0) == permutation(i, 2) for i in range(1, 5))  # channels of a pixel move together
    assert not torch.equal(rnd.train.x, ref.train.x)


def test_gaussian_inputs_match_the_data_statistics():
    dm = ToyImages(corruption="gaussian", val_size=0, seed=3, n=4000)
    dm.setup()
    ref = ToyImages(val_size=0, seed=3, n=4000)
    ref.setup()
    for c in range(3):
        assert abs(dm.train.x[:, c].mean() - ref.train.x[:, c].mean()) < 0.02 * (1 + ref.train.x[:, c].std())
        assert abs(dm.train.x[:, c].std() - ref.train.x[:, c].std()) < 0.05 * ref.train.x[:, c].std() + 0.01
    assert torch.equal(dm.train.y, ref.train.y)
    assert abs(torch.corrcoef(torch.stack([dm.train.x[:, 0, 0, 0], dm.train.y.float()]))[0, 1]) < 0.1


def test_partial_corruption_and_label_noise():
    n, p = 2000, 0.3
    dm = ToyImages(corruption="partial", corruption_prob=p, val_size=0, seed=4, n=n)
    dm.setup()
    changed = (dm.train.y != dm.clean_train_targets).float().mean().item()
    assert abs(changed - p * 0.9) < 0.04  # Zhang et al.: uniform over all 10 classes, so p (C-1)/C change
    noisy = ToyImages(label_noise=p, val_size=0, seed=4, n=n)
    noisy.setup()
    wrong = (noisy.train.y != noisy.clean_train_targets)
    assert int(wrong.sum()) == round(p * n) == noisy.noisy_indices.numel()  # all to other classes
    with pytest.raises(ValueError, match="allowed"):
        ToyImages(corruption="labels")
    with pytest.raises(ValueError, match="probability"):
        ToyImages(corruption="partial", corruption_prob=1.5)


# -- augmentation ---------------------------------------------------------------------------------
def test_augmentation_crops_and_flips_batches():
    from whylearn.data.augment import Augment, random_crop, random_hflip

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    crops = random_crop(x.repeat(50, 1, 1, 1), 2, g)
    assert crops.shape == (100, 3, 6, 6)
    pad = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(20):  # every crop is a 6x6 window of the padded image
        src = pad[i % 2]
        assert any(torch.equal(crops[i], src[:, a:a + 6, b:b + 6]) for a in range(5) for b in range(5))
    assert len({tuple(c.flatten().tolist()) for c in crops[::2]}) > 10  # offsets differ between images
    flipped = random_hflip(x.repeat(100, 1, 1, 1), 0.5, g)
    is_flip = torch.tensor([torch.equal(f, x[0].flip(-1)) for f in flipped[::2]])
    assert all(torch.equal(f, x[0]) or torch.equal(f, x[0].flip(-1)) for f in flipped[::2])
    assert 0.3 < is_flip.float().mean() < 0.7
    assert torch.equal(Augment(0, False)(x), x)  # switched off: identity
    chunk = torch.randn(4, 8, 3, 6, 6)
    assert Augment(2, True)(chunk).shape == chunk.shape


# -- CIFAR-10 files -------------------------------------------------------------------------------
def _write_cifar(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, str]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name, n in [*[(f"data_batch_{i}", n_train) for i in range(1, 6)], ("test_batch", n_test)]:
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return md5


def test_cifar10_reads_the_official_layout(tmp_path):
    from whylearn.data.cifar import CIFAR10DataModule, read_batch

    md5 = _write_cifar(tmp_path)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, file_md5=md5, val_size=10, batch_size=8)
    dm.setup()
    assert dm.input_shape == (3, 32, 32) and len(dm.train) == 90 and len(dm.val) == 10 and len(dm.test) == 10
    raw_x, raw_y = read_batch(tmp_path / "cifar-10-batches-py" / "test_batch", md5["test_batch"])
    # channel-major rows: the first 1024 bytes are the red 32x32 image
    d = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")
    assert np.array_equal(raw_x[3, 0], d[b"data"][3, :1024].reshape(32, 32))
    assert torch.equal(dm.test.y, torch.tensor(d[b"labels"]))
    # per-channel normalization with training statistics
    all_train = torch.cat([dm.train.x, dm.val.x])
    assert torch.allclose(all_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(all_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_cifar10_refuses_a_bad_checksum_before_unpickling(tmp_path, monkeypatch):
    from whylearn.data import cifar

    md5 = _write_cifar(tmp_path)
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    unpickled = []
    monkeypatch.setattr(cifar._ArrayUnpickler, "load", lambda self: unpickled.append(1) or {})
    with pytest.raises(cifar.ChecksumError, match="data_batch_3"):
        cifar.load_cifar10(tmp_path, download=False, file_md5=md5)
    assert unpickled == []  # every checksum is checked before anything is unpickled
    with pytest.raises(cifar.DataNotFoundError, match="cifar-10-batches-py"):
        cifar.load_cifar10(tmp_path / "nowhere", download=False)


def test_cifar10_download_verifies_the_archive(tmp_path):
    from whylearn.data import cifar

    src = tmp_path / "src"
    md5 = _write_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    good = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(cifar.ChecksumError, match="md5"):
        cifar.load_cifar10(tmp_path / "bad", download=True, file_md5=md5, url=archive.as_uri(), archive_md5="0" * 32)
    assert not (tmp_path / "bad" / "cifar-10-batches-py").exists()  # nothing unpacked
    splits = cifar.load_cifar10(tmp_path / "good", download=True, file_md5=md5, url=archive.as_uri(), archive_md5=good)
    assert splits["train"].x.shape == (100, 3, 32, 32) and splits["test"].y.shape == (10,)


# -- vectorized seed ensembles --------------------------------------------------------------------
def _trainer(steps):
    import lightning as L

    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


_SEEDS, _STEPS = [3, 4], 40
_OPT = partial(torch.optim.SGD, lr=0.05, momentum=0.9)


def _mnist1d():
    from whylearn.data import MNIST1DDataModule

    return MNIST1DDataModule(num_samples=600, val_size=0, batch_size=50, steps_per_chunk=8, seed=0)


@pytest.fixture(scope="module")
def single_runs():
    """Each seed trained alone, as `whylearn-train seed=<s>` would: torch.manual_seed(s), then build the model."""
    from whylearn.tasks import ClassificationTask

    runs = {}
    for s in _SEEDS:
        torch.manual_seed(s)
        single = ClassificationTask(MLP(40, 10, [16, 16]), 10, _OPT, log_every_n_steps=10)
        _trainer(_STEPS).fit(single, datamodule=_mnist1d())
        runs[s] = single
    return runs


@pytest.mark.parametrize("method", ["grouped", "vmap"])
def test_ensemble_members_match_single_runs(method, single_runs):
    from whylearn.tasks import EnsembleClassificationTask

    ens = EnsembleClassificationTask(MLP(40, 10, [16, 16]), 10, _OPT, seeds=_SEEDS, log_every_n_steps=10, method=method)
    _trainer(_STEPS).fit(ens, datamodule=_mnist1d())
    data = _mnist1d()
    data.setup()
    per = ens.evaluate_members(data.test.x, data.test.y)
    for i, s in enumerate(_SEEDS):
        single = single_runs[s]
        alone = single.evaluate(data.test.x, data.test.y)
        assert alone["loss"] == pytest.approx(float(per["loss"][i]), rel=1e-5, abs=1e-6)
        assert alone["acc"] == pytest.approx(float(per["acc"][i]), abs=1e-9)
        curve, members = single.history.series("train/loss")[1], ens.history.series(f"train/loss/seed{s}")[1]
        assert len(curve) == len(members) == _STEPS // 10 and np.allclose(curve, members, rtol=1e-5, atol=1e-6)
        assert single.history.last("val/acc") == pytest.approx(ens.history.last(f"val/acc/seed{s}"), abs=1e-6)
        for a, b in zip(ens.model.member(i).parameters(), single.model.parameters(), strict=False):
            assert torch.allclose(a, b, atol=1e-5)
    # the logged mean and spread are those of the members, and the members differ
    losses = [ens.history.last(f"val/loss/seed{s}") for s in _SEEDS]
    assert ens.history.last("val/loss") == pytest.approx(np.mean(losses))
    assert ens.history.last("val/loss_std") == pytest.approx(np.std(losses, ddof=1))
    assert abs(losses[0] - losses[1]) > 1e-4


def test_ensemble_rejects_what_would_couple_members():
    from whylearn.tasks import EnsembleClassificationTask

    opt = partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="clip"):
        EnsembleClassificationTask(MLP(4, 2, [3]), 2, opt, seeds=2, gradient_clip_val=1.0)
    with pytest.raises(ValueError, match="distinct"):
        VmapEnsemble(MLP(4, 2, [3]), [1, 1])
    with pytest.raises(ValueError, match=r"MLP \(without residual layers\) only, not CNN"):
        VmapEnsemble(CNN(1, 2, k=1), [1, 2], method="grouped")
    assert VmapEnsemble(CNN(1, 2, k=1, norm="none"), [1, 2])(torch.randn(5, 1, 8, 8)).shape == (2, 5, 2)


# -- random labels on real MNIST (Zhang et al. 2017) -------------------------------------------------
def _steps_to_memorize(data_dir, corruption: str, max_steps: int = 1500) -> tuple[int | None, dict, dict]:
    """Train an MLP-512 with Adam on 500 MNIST digits until 100% training accuracy (checked every epoch)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from whylearn.data import CorruptedMNISTDataModule
    from whylearn.tasks import ClassificationTask

    class StopWhenMemorized(Callback):
        reached: int | None = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            dm = trainer.datamodule
            if pl_module.evaluate(dm.train.x, dm.train.y)["acc"] == 1.0:
                self.reached = trainer.global_step
                trainer.should_stop = True

    dm = CorruptedMNISTDataModule(data_dir=str(data_dir), download=False, train_size=500, val_size=1000,
                                  batch_size=100, steps_per_chunk=5, seed=0, corruption=corruption)
    torch.manual_seed(0)
    task = ClassificationTask(MLP(784, 10, [512]), 10, partial(torch.optim.Adam, lr=1e-3))
    stop = StopWhenMemorized()
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[stop])
    trainer.fit(task, datamodule=dm)
    train = task.evaluate(dm.train.x, dm.train.y)
    test = task.evaluate(dm.test.x, dm.test.y)
    return stop.reached, train, test


def test_mlp_memorizes_random_labels_on_mnist_but_not_generalizes(shared_data):
    torch.set_num_threads(1)
    true_steps, true_train, true_test = _steps_to_memorize(shared_data, "true")
    rand_steps, rand_train, rand_test = _steps_to_memorize(shared_data, "random")
    assert true_steps is not None and true_train["acc"] == 1.0 and true_test["acc"] > 0.8
    assert rand_steps is not None and rand_train["acc"] == 1.0  # fits 500 random labels exactly
    assert rand_test["acc"] <= 0.15  # while the test accuracy stays at chance
    assert rand_steps >= 1.5 * true_steps  # and needs more steps than the true labels (measured: 135 vs 60)


# -- sweep results ---------------------------------------------------------------------------------
def test_analyze_sweep_tables_threshold_and_figure(tmp_path):
    import json

    from whylearn.cli.analyze import main, sweep

    # a fake multirun: train error reaches 0 at width 40 and stays there; test error peaks there
    widths = [8, 16, 24, 40, 64, 128]
    train_err = [0.5, 0.3, 0.1, 0.0, 0.0, 0.0]
    test_err = [0.50, 0.45, 0.52, 0.60, 0.48, 0.40]
    for j, (w, tr, te) in enumerate(zip(widths, train_err, test_err, strict=False)):
        job = tmp_path / str(j)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.width={w}\n- experiment=dd\n")
        (job / "summary.json").write_text(json.dumps({"params": w * w + 52 * w + 10, "train/acc": 1 - tr,
                                                      "test/acc": 1 - te, "test/acc_std": 0.01, "status": "completed"}))
    res = sweep(tmp_path, x="model.width")
    assert res["swept"] == ["model.width"] and res["runs"] == 6 and res["threshold"] == 40
    c = res["curve"]
    assert c["at_threshold"] == pytest.approx(0.60) and c["best_smaller"] == pytest.approx(0.45)
    assert c["largest"] == pytest.approx(0.40) and c["peak_x"] == 40
    table = (tmp_path / "sweep.md").read_text()
    assert "| model.width |" in table and "0.6 ± 0.01" in table
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 7
    assert all(Path(f).stat().st_size > 1000 for f in res["figures"])
    assert main(["sweep", str(tmp_path / "nothing")]) == 2  # a clear error, not a traceback
    with pytest.raises(ValueError, match="allowed"):
        sweep(tmp_path, x="model.depth")


def test_augmentation_runs_on_training_chunks_only_and_is_switchable(tmp_path):
    from whylearn.data.cifar import CIFAR10DataModule
    from whylearn.tasks import ClassificationTask

    md5 = _write_cifar(tmp_path, n_train=8, n_test=8)
    for augment in (True, False):
        dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, file_md5=md5, val_size=8, batch_size=8,
                               steps_per_chunk=2, augment=augment, crop_padding=4, hflip=True)
        seen = []
        original = dm.augmenter.chunk
        dm.augmenter.chunk = lambda chunk, step, seen=seen, original=original: (
            seen.append(tuple(chunk[0].shape)) or original(chunk, step))
        task = ClassificationTask(CNN(3, 10, k=2), 10, partial(torch.optim.SGD, lr=0.01))
        _trainer(4).fit(task, datamodule=dm)
        # 4 steps in chunks of 2 mini-batches of 8 images; validation batches are never augmented
        assert seen == ([(2, 8, 3, 32, 32)] * 2 if augment else [])
