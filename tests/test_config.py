"""Run configs: YAML round trips, typed overrides, errors naming the key, and what a config builds."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import pimvae
from pimvae import config as C
from pimvae.data import REGISTRY, MultimodalDataset, mnist
from pimvae.data.loaders import read_idx, svhn

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


def quickstart(*overrides):
    return C.load_config(ROOT / "examples" / "configs" / "quickstart.yaml", overrides)


def test_embedded_quickstart_is_the_example_file():
    assert C.QUICKSTART == (ROOT / "examples" / "configs" / "quickstart.yaml").read_text()
    assert C.load_named_or_path("quickstart") == quickstart()


def test_yaml_round_trip(tmp_path):
    cfg = quickstart("model.aggregator.type=self_attention", "objective.subsets={type: bernoulli, p: 0.3}",
                     "train.betas=[0.8, 0.99]", "data.options.dim_range=[6, 9]")
    C.dump_config(cfg, tmp_path / "c.yaml")
    again = C.load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.train.betas == (0.8, 0.99) and again.objective.subsets == C.Component("bernoulli", {"p": 0.3})
    assert yaml.safe_load(C.dump_config(cfg))["model"]["aggregator"] == {"type": "self_attention", "embed_dim": 64,
                                                                         "chi_hidden": [64], "rho_hidden": [64]}


def test_overrides_are_typed():
    cfg = quickstart("train.lr=3e-4", "--train.max_steps=7", "train.final_lr=null", "train.devices=auto",
                     "model.prior=gaussian_mixture", "model.prior.num_components=3")
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)  # YAML reads 3e-4 as a string; converted
    assert cfg.train.max_steps == 7 and cfg.train.devices == "auto"
    # the loader reads exponents without a dot as numbers (YAML 1.2), everywhere; quoted text stays text
    assert C.load_yaml("a: 3e-4\nb: [1E3, -.5e+2, '2e-1']\nc: 1e\nd: e5\ne: 7") == \
        {"a": 3e-4, "b": [1000.0, -50.0, "2e-1"], "c": "1e", "d": "e5", "e": 7}
    assert C.parse_value("5e-4") == 5e-4 and C.parse_value("[poe, moe]") == ["poe", "moe"]
    assert C.parse_value("{unclosed") == "{unclosed"  # not YAML: the text itself
    assert cfg.model.prior == C.Component("gaussian_mixture", {"num_components": 3})
    # options of a component given without `type` merge onto the default's
    assert quickstart("model.aggregator.embed_dim=16").model.aggregator.options == {
        "embed_dim": 16, "chi_hidden": [64], "rho_hidden": [64]}


#: errors of the private-latent section (SPEC §5), run by test_errors_name_the_key
PRIVATE_ERRORS = [
    ("model.private={type: sum_pooling, dim: 2, widht: 3}",
     r"model\.private\.widht: unknown option; SumPoolingPrivate takes "
     r"\['activation', 'dim', 'hidden', 'min_scale', 'width'\]"),
    ("model.private={type: independent, dim: 2, width: 3}",
     r"model\.private\.width: unknown option; IndependentPrivate takes \['dim', 'min_scale'\]"),
    ("model.private={type: independent, dim: 2, private_dim: 3}", r"model\.private\.private_dim: unknown option"),
    ("model.private={type: sum_pooling, dim: 2, shared_dim: 4}",
     r"model\.private\.shared_dim is set from the data and model sizes; remove it"),
    ("model.private={type: self_attention, dim: 2, num_heads: two}", r"model\.private\.num_heads: expected an integer"),
    ("model.private={type: independent}", r"model\.private\.dim is required"),
    ("model.private={type: independent, dim: 0}", r"model\.private\.dim must be a positive integer, got int 0"),
    ("model.private={type: independent, dim: -2}", r"model\.private\.dim must be a positive integer, got int -2"),
    ("model.private={type: independent, dim: 1.5}", r"model\.private\.dim: expected an integer, got float 1\.5"),
    ("model.private={type: independent, dim: true}", r"model\.private\.dim: expected an integer, got bool True"),
    ("model.private={type: nope, dim: 2}", r"model\.private\.type: unknown private 'nope'; choose from "
                                         r"\['independent', 'self_attention', 'sum_pooling'\]"),
    ("model.private.dim=2", r"model\.private\.type is required"),
    ("model.private=3", r"model\.private: expected a mapping"),
    ("model.privat={type: independent, dim: 2}", r"model\.privat: unknown key; model takes \[.*'prior', 'private'\]"),
]


@pytest.mark.parametrize("override, message", [
    ("train.lr=abc", r"train\.lr: expected a number, got str 'abc'"),
    ("train.lrr=1", r"train\.lrr: unknown key; train takes \['seed', 'lr'"),
    ("train.max_steps=1.5", r"train\.max_steps: expected int or null, got float 1\.5"),
    ("train.progress_bar=1", r"train\.progress_bar: expected true or false"),
    ("train.lr=-1", r"train\.lr must be positive"),
    ("train.betas=[0.9]", r"train\.betas: expected a list of 2 values"),
    ("model.aggregator.embed_dimm=3", r"model\.aggregator\.embed_dimm: unknown option; SumPooling takes"),
    ("model.aggregator.embed_dim=big", r"model\.aggregator\.embed_dim: expected an integer"),
    ("model.aggregator.type=nope", r"model\.aggregator\.type: unknown aggregator 'nope'"),
    ("model.default_modality.encoder.hiden=[3]", r"model\.default_modality\.encoder\.hiden: unknown option"),
    ("model.default_modality.likelihood.learn_scale=3", r"likelihood\.learn_scale: expected str or null"),
    ("model.modalities.x0.weight=-2", r"model\.modalities\.x0: weight must be positive"),
    ("objective.name=elbow", r"objective\.name: unknown objective 'elbow'"),
    ("objective.subsets.p=0.5", r"objective\.subsets\.p: unknown option; Hierarchical takes \[\]"),
    ("data.options.n=many", r"data\.options\.n: expected an integer"),
    ("data.options.sizes=3", r"data\.options\.sizes: unknown option; linear_gaussian_data takes"),
    ("data.name=imagenet", r"data\.name: unknown data set 'imagenet'"),
    ("data.split=[0.5, 0.6, 0.1]", r"data\.split must be three non-negative fractions"),
    ("model=3", r"model: expected a mapping"),
    ("train.lr", r"not of the form key\.path=value"),
    *PRIVATE_ERRORS,
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        quickstart(override)


def test_bad_yaml_files(tmp_path):
    (tmp_path / "a.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        C.load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="a run config is a mapping"):
        C.load_config(tmp_path / "b.yaml")
    with pytest.raises(ValueError, match="not found"):
        C.load_named_or_path(tmp_path / "missing.yaml")


def test_quickstart_builds_its_model_data_and_objective():
    cfg = quickstart()
    splits = C.build_data(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1600, 200, 200)
    lg = pimvae.data.linear_gaussian(n=2000, num_modalities=3, latent_dim=4, dim_range=(6, 10), seed=0)
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(splits.train.data["x0"], lg.data["x0"][order[:1600]])  # the seeded split of the data
    torch.manual_seed(0)
    model = C.build_model(cfg, splits.train)
    dims = {n: x.shape[1] for n, x in lg.data.items()}
    for name, mod in model.modalities.items():
        assert isinstance(mod.decoder, torch.nn.Linear) and mod.decoder.weight.shape == (dims[name], 4)
        assert mod.encoder.net[0].in_features == dims[name] and mod.encoder.net[-1].out_features == 32
        assert float(mod.likelihood.scale) == 1.0
    assert isinstance(model.aggregator, pimvae.aggregators.SumPooling) and model.aggregator.embed_dim == 64
    assert isinstance(model.prior, pimvae.priors.StandardNormal)
    obj = C.build_objective(quickstart("objective.name=mixture", "objective.subsets={type: bernoulli, p: 0.25}",
                                       "objective.beta=0.5", "objective.num_samples=3"))
    assert isinstance(obj, pimvae.objectives.MixtureBound) and obj.beta == 0.5 and obj.num_samples == 3
    assert isinstance(obj.subsets, pimvae.objectives.IndependentBernoulli) and obj.subsets.p == 0.25


# ---------------------------------------------------------------------------------------------------------------
# Private latents (model.private)
# ---------------------------------------------------------------------------------------------------------------
PRIVATE = {
    "independent": ("{type: independent, dim: 2}", pimvae.IndependentPrivate),
    "sum_pooling": ("{type: sum_pooling, dim: 2, width: 16, hidden: [8]}", pimvae.SumPoolingPrivate),
    "self_attention": ("{type: self_attention, dim: 2, width: 16, hidden: [8], num_heads: 2, ff_dim: 8}",
                       pimvae.SelfAttentionPrivate),
}
TINY_FIT = ["data.options.n=300", "train.max_steps=6", "train.log_every_n_steps=3", "train.progress_bar=false",
            "train.checkpoint_every_n_steps=null", "train.tensorboard=false"]


def test_no_private_section_by_default():
    cfg = quickstart()
    assert cfg.model.private is None and cfg.model.decoder_input_dim == 4
    assert yaml.safe_load(C.dump_config(cfg))["model"]["private"] is None
    model = C.build_model(cfg, C.build_data(quickstart("data.options.n=50")).train)
    assert model.latent_dim == 4 and not isinstance(model.aggregator, pimvae.WithPrivate)
    assert not isinstance(model.prior, pimvae.PrivatePrior)


@pytest.mark.parametrize("kind", list(PRIVATE))
def test_private_section_builds_a_private_latent_model(kind):
    text, cls = PRIVATE[kind]
    cfg = quickstart(f"model.private={text}", "data.options.n=100")
    assert cfg.model.private.type == kind and cfg.model.private.options["dim"] == 2
    assert cfg.model.decoder_input_dim == 4 + 2
    splits = C.build_data(cfg)
    torch.manual_seed(0)
    model = C.build_model(cfg, splits.train)
    assert model.latent_dim == 4 + 3 * 2  # D' + M·D̃
    agg = model.aggregator
    assert isinstance(agg, pimvae.WithPrivate) and type(agg.private) is cls
    assert isinstance(agg.shared, pimvae.aggregators.SumPooling) and agg.shared.latent_dim == 4
    assert agg.shared.embed_dim == 64  # model.aggregator options still reach the shared aggregator
    assert (agg.shared_dim, agg.private_dim, agg.num_modalities) == (4, 2, 3)
    assert agg.private.feature_dim == 32 and agg.private.private_dim == 2
    if kind != "independent":
        assert agg.private.shared_dim == 4 and agg.private.width == 16 and agg.private.hidden == [8]
    if kind == "self_attention":
        assert agg.private.num_heads == 2 and agg.private.ff_dim == 8
    assert isinstance(model.prior, pimvae.PrivatePrior) and isinstance(model.prior.shared, pimvae.priors.StandardNormal)
    assert (model.prior.shared_dim, model.prior.num_modalities, model.prior.private_dim) == (4, 3, 2)
    for name, mod in model.modalities.items():  # decoder s reads (z', z̃_s): D' + D̃ inputs
        assert mod.decoder.weight.shape == (splits.train.data[name].shape[1], 6)
    batch = splits.train.batch(torch.arange(8))
    z = model.encode(batch).rsample()
    assert z.shape == (8, 10) and model.prior().log_prob(z).shape == (8,)
    loss = C.build_objective(cfg)(model, batch).loss
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_private_config_yaml_round_trip(tmp_path):
    cfg = quickstart("model.private={type: self_attention, dim: 3, num_blocks: 2}")
    C.dump_config(cfg, tmp_path / "c.yaml")
    again = C.load_config(tmp_path / "c.yaml")
    assert again == cfg and again.model.private == C.Component("self_attention", {"dim": 3, "num_blocks": 2})
    # an override of one option keeps the others; null switches private latents off
    assert quickstart("model.private={type: independent, dim: 2}", "model.private.dim=5").model.private == \
        C.Component("independent", {"dim": 5})
    assert C.load_config(tmp_path / "c.yaml", ["model.private=null"]).model.private is None




def test_private_example_config_loads_and_builds():
    cfg = C.load_config(ROOT / "examples" / "configs" / "private.yaml")
    assert cfg.model.private == C.Component("sum_pooling", {"dim": 2, "width": 64, "hidden": [64]})
    # the quickstart plus the private section, nothing else
    assert cfg == quickstart("model.private={type: sum_pooling, dim: 2, width: 64, hidden: [64]}")
    splits = C.build_data(cfg)
    model = C.build_model(cfg, splits.train)
    assert model.latent_dim == 4 + 3 * 2 and type(model.aggregator.private) is pimvae.SumPoolingPrivate
    assert all(m.decoder.in_features == 6 for m in model.modalities.values())


def test_private_fit_then_save_load_round_trip(tmp_path):
    from pimvae.training import fit_config

    cfg = quickstart("model.private={type: sum_pooling, dim: 2, width: 16, hidden: [16]}", *TINY_FIT)
    torch.manual_seed(cfg.train.seed)
    initial = C.build_model(cfg, C.build_data(cfg).train).state_dict()
    model, result = fit_config(cfg, tmp_path / "run")
    assert result.steps == 6 and len(result.train_loss) == 6 and all(math.isfinite(v) for v in result.train_loss)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in initial.items())  # training moved weights
    assert C.load_config(tmp_path / "run" / "config.yaml") == cfg  # the resolved config keeps the section
    loaded = pimvae.MultimodalVAE.load(tmp_path / "run" / "model")
    assert isinstance(loaded.aggregator, pimvae.WithPrivate)
    assert type(loaded.aggregator.private) is pimvae.SumPoolingPrivate
    assert isinstance(loaded.prior, pimvae.PrivatePrior) and loaded.latent_dim == 10
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    model.eval(), loaded.eval()
    batch = C.build_data(cfg).val.batch(torch.arange(16))
    z = torch.randn(5, 16, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.encode(batch).log_prob(z), loaded.encode(batch).log_prob(z))
        assert torch.equal(model.prior().log_prob(z), loaded.prior().log_prob(z))
        assert torch.equal(model.log_likelihoods(z, batch.data, batch.present),
                           loaded.log_likelihoods(z, batch.data, batch.present))
    a = pimvae.evaluation.log_likelihood(model, batch, num_particles=8, chunk_size=8, seed=0)
    b = pimvae.evaluation.log_likelihood(loaded, batch, num_particles=8, chunk_size=8, seed=0)
    assert a.shape == (16,) and torch.isfinite(a).all() and torch.equal(a, b)


def test_private_example_config_through_the_cli(tmp_path, capsys):
    from pimvae import cli

    run = tmp_path / "run"
    code = cli.main(["fit", str(ROOT / "examples" / "configs" / "private.yaml"), "--run-dir", str(run), *TINY_FIT])
    out = capsys.readouterr().out
    assert code == 0 and "trained 6 steps" in out
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["private"] == {
        "type": "sum_pooling", "dim": 2, "width": 64, "hidden": [64]}
    model = pimvae.MultimodalVAE.load(run / "model")
    assert model.latent_dim == 10 and model.aggregator.private_dim == 2


def test_missing_rate_and_label_modalities(monkeypatch):
    def labelled(n: int = 400):
        g = torch.Generator().manual_seed(0)
        return MultimodalDataset({"x": torch.randn(n, 3, generator=g), "y": torch.randint(0, 4, (n,), generator=g)})

    monkeypatch.setitem(REGISTRY, "labelled", labelled)
    cfg = C.parse_config({"data": {"name": "labelled", "missing_rate": 0.5, "split": [1.0, 0.0, 0.0]},
                          "model": {"modalities": {"y": {"encoder": {"type": "embedding"},
                                                         "likelihood": {"type": "categorical"}}}}})
    splits = C.build_data(cfg)
    assert splits.val is None and splits.test is None and len(splits.train) == 400
    frac = splits.train.present.float().mean().item()
    assert abs(frac - (1 - 0.5 + 0.5 ** 2 / 2)) < 0.03  # P(kept) = 1 − η, plus one slot of each all-missing row
    model = C.build_model(cfg, splits.train)
    assert model.modalities["y"].encoder.embedding.num_embeddings == 4  # classes read off the data
    assert model.modalities["y"].decoder.net[-1].out_features == 4
    with pytest.raises(ValueError, match="model.modalities.y.num_classes = 3, but modality 'y' has classes up to 3"):
        C.build_model(C.parse_config(cfg_dict(cfg), ["model.modalities.y.num_classes=3"]), splits.train)
    with pytest.raises(ValueError, match="model.modalities.z: the data has no such modality"):
        C.build_model(C.parse_config(cfg_dict(cfg), ["model.modalities.z.weight=2"]), splits.train)


def cfg_dict(cfg):
    return C.to_dict(cfg)


def test_data_builders_by_registry_and_by_import_path():
    cfg = C.parse_config({"data": {"name": "pimvae.data.loaders:linear_gaussian_data",
                                   "options": {"n": 50, "num_modalities": 2, "latent_dim": 2, "dim_range": [2, 3]}}})
    assert len(C.build_data(cfg).train) == 40
    with pytest.raises(ValueError, match="cannot import 'nowhere:fn'"):
        C.parse_config({"data": {"name": "nowhere:fn"}})
    with pytest.raises(ValueError, match="already registered"):
        pimvae.data.register("linear_gaussian")(lambda: None)


# ---------------------------------------------------------------------------------------------------------------
# MNIST / SVHN readers
# ---------------------------------------------------------------------------------------------------------------
def _idx(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_idx_reader_on_written_files(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([7, 3], dtype=np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images, 0x08)))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(_idx(labels, 0x08))  # plain file also read
    ds = mnist(str(tmp_path), split="all")
    assert ds.data["image"].shape == (4, 1, 28, 28) and ds.data["image"].dtype == torch.float32
    assert ds.data["image"][1, 0, 0, 5].item() == pytest.approx(((28 * 28 + 5) % 256) / 255)
    assert ds.data["label"].tolist() == [7, 3, 7, 3]
    floats = np.array([[1.5, -2.0]], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(_idx(floats, 0x0D))
    assert read_idx(tmp_path / "f.idx").tolist() == [[1.5, -2.0]]
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    with pytest.raises(ValueError, match="no train-images-idx3-ubyte"):
        mnist(str(tmp_path / "t10k-images-idx3-ubyte.gz").rsplit("/", 1)[0] + "/..", split="train")


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared MNIST files not present")
def test_real_mnist_test_split():
    ds = mnist(str(MNIST_DIR), split="test")
    assert ds.data["image"].shape == (10000, 1, 28, 28)
    assert ds.data["label"].bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.data["image"].min().item() == 0.0 and ds.data["image"].max().item() == 1.0
    assert len(mnist(str(MNIST_DIR), split="test", limit=100, label=False).names) == 1


def test_svhn_reader_on_a_written_mat_file(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = svhn(str(tmp_path), split="test")
    assert ds.data["image"].shape == (5, 3, 32, 32)
    assert ds.data["image"][2, 1, 4, 7].item() == pytest.approx(x[4, 7, 1, 2] / 255)  # (H, W, C, N) -> (N, C, H, W)
    assert ds.data["label"].tolist() == [0, 1, 2, 0, 9]  # 10 stands for the digit 0
    assert len(svhn(str(tmp_path / "test_32x32.mat"), limit=2)) == 2
    savemat(tmp_path / "other.mat", {"images": x})
    with pytest.raises(ValueError, match="lacks the SVHN variables"):
        svhn(str(tmp_path / "other.mat"))
    with pytest.raises(ValueError, match="not found"):
        svhn(str(tmp_path), split="train")


def _fake_mnist_svhn(tmp_path, n_mnist=40, n_svhn=30):
    """Tiny MNIST / SVHN files whose images encode their label as a constant pixel value label / 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    m_labels = rng.integers(0, 10, n_mnist).astype(np.uint8)
    m_images = np.repeat(m_labels * 25, 28 * 28).reshape(n_mnist, 28, 28).astype(np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(_idx(m_images, 0x08))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(_idx(m_labels, 0x08))
    s_labels = rng.integers(0, 10, n_svhn)
    s_images = np.broadcast_to((s_labels * 25).astype(np.uint8), (32, 32, 3, n_svhn)).copy()
    savemat(tmp_path / "train_32x32.mat", {"X": s_images, "y": np.where(s_labels == 0, 10, s_labels)[:, None]})
    return m_labels, s_labels


def test_mnist_svhn_text_pairs_by_digit(tmp_path):
    from pimvae.data.loaders import ALPHABET, mnist_svhn_text

    m_labels, s_labels = _fake_mnist_svhn(tmp_path)
    ds = mnist_svhn_text(str(tmp_path), str(tmp_path), pairs=2)
    label = ds.extras["label"]
    expected = sum(2 * min((m_labels == d).sum(), (s_labels == d).sum()) for d in range(10))
    assert len(ds) == expected and len(ALPHABET) == 71
    assert torch.equal((ds.data["mnist"][:, 0, 0, 0] * 255 / 25).round().long(), label)
    assert torch.equal((ds.data["svhn"][:, 0, 0, 0] * 255 / 25).round().long(), label)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    texts = ["".join(ALPHABET[i] for i in row) for row in ds.data["text"].tolist()]
    assert all(len(t) == 8 and t.strip() == names[d] for t, d in zip(texts, label.tolist()))
    assert len({t for t, d in zip(texts, label.tolist()) if d == 3}) > 1  # random start positions


def test_mnist_svhn_text_example_config_builds_the_paper_model(tmp_path):
    _fake_mnist_svhn(tmp_path)
    cfg = C.load_config(ROOT / "examples" / "configs" / "mnist_svhn_text.yaml",
                        [f"data.options.mnist_path={tmp_path}", f"data.options.svhn_path={tmp_path}"])
    assert (cfg.train.lr, cfg.train.final_lr, cfg.train.batch_size, cfg.train.max_epochs) == (5e-4, 1e-4, 250, 100)
    splits = C.build_data(cfg)
    model = C.build_model(cfg, splits.train)
    svhn, text = model.modalities["svhn"], model.modalities["text"]
    assert svhn.encoder.head[0].in_features == 2048 and svhn.encoder.out_dim == 256
    assert text.decoder.vocab_size == 71 and text.likelihood.param_extra_ndim == 1
    assert model.aggregator.num_blocks == 2 and model.modalities["mnist"].weight == pytest.approx(3072 / 784, abs=1e-3)
    loss = C.build_objective(cfg)(model, splits.train.batch(torch.arange(4))).loss
    assert torch.isfinite(loss)
