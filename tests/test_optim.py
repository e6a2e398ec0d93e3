"""Parameter groups (LLRD, no-decay), AdamW, LR schedules and top-layer re-initialisation."""

import argparse
import re
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForQuestionAnswering,
)

from squad_qa.training.optim import (
    SCHEDULER_CHOICES,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    reinit_top_layers,
    unwrap_model,
)

KW = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
          intermediate_size=64, max_position_embeddings=64)
LR, WD, GAMMA = 1e-3, 0.01, 0.5


def tiny_model(seed=0, cls=BertForQuestionAnswering, config_cls=BertConfig, **overrides):
    torch.manual_seed(seed)
    return cls(config_cls(**{**KW, **overrides}))


def lr_and_wd_by_name(groups):
    out = {}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
        for n in g["param_names"]:
            assert n not in out, f"{n} in two groups"
            out[n] = (g["lr"], g["weight_decay"], g["name"])
    return out


def expected_wd(name):
    return 0.0 if name.endswith("bias") or "LayerNorm" in name else WD


def layer_of(name):
    m = re.search(r"encoder\.layer\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def check_partition(model, groups):
    placed = [p for g in groups for p in g["params"]]
    assert len(placed) == len({id(p) for p in placed}) == len(list(model.parameters()))


def test_per_layer_llrd_rates_and_no_decay():
    model = tiny_model()
    groups = build_param_groups(model, LR, WD, llrd_decay=GAMMA, head_lr=5e-3)
    check_partition(model, groups)
    got = lr_and_wd_by_name(groups)
    assert set(got) == {n for n, _ in model.named_parameters()}
    for name, (lr, wd, gname) in got.items():
        if name.startswith("qa_outputs."):
            want = 5e-3
        elif name.startswith("bert.embeddings."):
            want = LR * GAMMA**4  # one factor below layer 0
        else:
            want = LR * GAMMA ** (3 - layer_of(name))
        assert lr == pytest.approx(want, rel=1e-12), name
        assert wd == expected_wd(name), name
        assert gname.endswith("/no_decay") == (wd == 0.0)
    assert got["bert.encoder.layer.3.output.dense.weight"][0] == LR
    assert got["bert.encoder.layer.0.attention.output.LayerNorm.weight"][1] == 0.0


@pytest.mark.parametrize(
    "k,layer_exponents,emb_exponent",
    [(2, [1, 1, 0, 0], 2), (3, [2, 2, 1, 0], 3), (4, [3, 2, 1, 0], 4), (1, [0, 0, 0, 0], 1)],
)
def test_grouped_llrd(k, layer_exponents, emb_exponent):
    model = tiny_model()
    groups = build_param_groups(model, LR, WD, llrd_decay=GAMMA, llrd_groups=k)
    check_partition(model, groups)
    for name, (lr, wd, _) in lr_and_wd_by_name(groups).items():
        if name.startswith("qa_outputs."):
            want = LR
        elif name.startswith("bert.embeddings."):
            want = LR * GAMMA**emb_exponent
        else:
            want = LR * GAMMA ** layer_exponents[layer_of(name)]
        assert lr == pytest.approx(want, rel=1e-12), name
        assert wd == expected_wd(name), name
    if k == 4:  # k = L reproduces the per-layer scheme exactly
        plain = lr_and_wd_by_name(build_param_groups(model, LR, WD, llrd_decay=GAMMA))
        assert {n: v[:2] for n, v in plain.items()} == {n: v[:2] for n, v in lr_and_wd_by_name(groups).items()}


def test_without_llrd_only_head_lr_differs():
    model = tiny_model()
    groups = build_param_groups(model, LR, WD, head_lr=3e-3)
    assert sorted(g["name"] for g in groups) == ["body/decay", "body/no_decay", "head/decay", "head/no_decay"]
    for name, (lr, wd, _) in lr_and_wd_by_name(groups).items():
        assert lr == (3e-3 if name.startswith("qa_outputs.") else LR)
        assert wd == expected_wd(name)


def test_pooler_goes_with_the_head_and_frozen_params_are_left_out():
    model = tiny_model(cls=BertForSequenceClassification)
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)
    got = lr_and_wd_by_name(build_param_groups(model, LR, WD, llrd_decay=GAMMA, head_lr=7e-3))
    assert got["bert.pooler.dense.weight"][:2] == (7e-3, WD)
    assert got["classifier.weight"][0] == 7e-3
    assert "bert.embeddings.position_embeddings.weight" not in got
    assert len(got) == sum(p.requires_grad for p in model.parameters())


def test_generic_bert_like_model():
    model = tiny_model(cls=RobertaForQuestionAnswering, config_cls=RobertaConfig)
    got = lr_and_wd_by_name(build_param_groups(model, LR, WD, llrd_decay=GAMMA))
    assert got["roberta.encoder.layer.1.intermediate.dense.weight"][0] == pytest.approx(LR * GAMMA**2)
    assert got["roberta.embeddings.word_embeddings.weight"][0] == pytest.approx(LR * GAMMA**4)


def test_bad_arguments_and_unknown_parameters_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="llrd_groups must be in"):
        build_param_groups(model, LR, llrd_decay=GAMMA, llrd_groups=5)
    with pytest.raises(ValueError, match="llrd_decay must be in"):
        build_param_groups(model, LR, llrd_decay=0.0)
    with pytest.raises(ValueError, match="llrd_groups needs llrd_decay"):
        build_param_groups(model, LR, llrd_groups=2)
    model.bert.mystery = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"cannot assign a learning rate.*bert\.mystery\.weight"):
        build_param_groups(model, LR)


def test_ddp_wrapped_model_gives_the_same_groups():
    model = tiny_model()
    plain = build_param_groups(model, LR, WD, llrd_decay=GAMMA)
    # In-memory store: no rendezvous file that a concurrent pytest session could prune.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timedelta(seconds=60))
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        assert unwrap_model(ddp) is model
        wrapped = build_param_groups(ddp, LR, WD, llrd_decay=GAMMA)
        # same tensors, same names (without "module."), same rates
        assert [(g["name"], g["lr"], g["param_names"]) for g in wrapped] == [
            (g["name"], g["lr"], g["param_names"]) for g in plain
        ]
        assert all(a is b for gw, gp in zip(wrapped, plain) for a, b in zip(gw["params"], gp["params"]))
    finally:
        dist.destroy_process_group()


def test_build_optimizer_reads_args_with_defaults():
    model = tiny_model()
    opt = build_optimizer(model, argparse.Namespace(learning_rate=2e-3, weight_decay=WD, llrd_decay=GAMMA))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.9, 0.999)
    assert not opt.defaults["fused"]  # CPU parameters
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["layer.3/decay"] == 2e-3 and lrs["embeddings/decay"] == pytest.approx(2e-3 * GAMMA**4)
    opt2 = build_optimizer(model, argparse.Namespace(learning_rate=1e-3, adam_epsilon=1e-6, adam_beta2=0.98))
    assert opt2.defaults["eps"] == 1e-6 and opt2.defaults["betas"] == (0.9, 0.98)
    assert {g["name"] for g in opt2.param_groups} == {"head/decay", "head/no_decay", "body/decay", "body/no_decay"}
    # a real step works and the named groups survive a state_dict round trip
    model(input_ids=torch.randint(1, 100, (2, 8)), start_positions=torch.tensor([0, 1]),
          end_positions=torch.tensor([0, 2])).loss.backward()
    opt.step()
    opt2 = build_optimizer(model, argparse.Namespace(learning_rate=2e-3, weight_decay=WD, llrd_decay=GAMMA))
    opt2.load_state_dict(opt.state_dict())
    assert [g["param_names"] for g in opt2.param_groups] == [g["param_names"] for g in opt.param_groups]


def _lrs(name, warmup, total, steps, base=(1.0, 0.25)):
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": base[0]}, {"params": [p2], "lr": base[1]}])
    sched = build_scheduler(opt, name, warmup, total)
    out = {}
    for step in range(total + 1):
        if step in steps:
            out[step] = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    assert [g["initial_lr"] for g in opt.param_groups] == list(base)
    return out


def test_linear_schedule_warms_up_then_decays_per_group():
    got = _lrs("linear", 2, 10, {0, 1, 2, 6, 10})
    assert got[0] == [0.0, 0.0]
    assert got[1] == pytest.approx([0.5, 0.125])
    assert got[2] == pytest.approx([1.0, 0.25])
    assert got[6] == pytest.approx([0.5, 0.125])
    assert got[10] == pytest.approx([0.0, 0.0])


def test_cosine_and_constant_schedules():
    assert _lrs("cosine", 0, 10, {5})[5] == pytest.approx([0.5, 0.125])
    const = _lrs("constant", 4, 10, {2, 4, 10})
    assert const[2] == pytest.approx([0.5, 0.125]) and const[4] == const[10] == pytest.approx([1.0, 0.25])
    assert set(SCHEDULER_CHOICES) == {"linear", "cosine", "constant"}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown lr scheduler 'exotic'"):
        build_scheduler(opt, "exotic", 0, 10)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        build_scheduler(opt, "linear", 11, 10)


def _pretrained_like(tmp_path, cls):
    """Round-trip through save/from_pretrained so the tensors carry transformers' loaded flags."""
    tiny_model(cls=cls, initializer_range=0.02).save_pretrained(tmp_path / "m")
    model = cls.from_pretrained(tmp_path / "m")
    with torch.no_grad():  # "fine-tuned" weights: every tensor differs from its initial value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01 + 0.05)
    return model


@pytest.mark.parametrize("cls", [BertForQuestionAnswering, BertForSequenceClassification])
def test_reinit_top_layers_changes_exactly_those_layers(tmp_path, cls):
    model = _pretrained_like(tmp_path, cls)
    model.config.initializer_range = 0.5  # proves the re-draw uses the config's range
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = reinit_top_layers(model, 2)
    has_pooler = cls is BertForSequenceClassification

    expected = {n for n in before if (layer_of(n) or -1) >= 2 or (has_pooler and n.startswith("bert.pooler."))}
    assert set(names) == expected and len(names) == len(expected)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n not in expected), n
    params = dict(model.named_parameters())
    std = params["bert.encoder.layer.3.intermediate.dense.weight"].std().item()
    assert 0.4 < std < 0.6
    assert torch.equal(params["bert.encoder.layer.2.output.LayerNorm.weight"], torch.ones(32))
    assert torch.equal(params["bert.encoder.layer.2.output.dense.bias"], torch.zeros(32))
    if has_pooler:
        assert 0.3 < params["bert.pooler.dense.weight"].std().item() < 0.7


def test_reinit_bounds():
    model = tiny_model()
    assert reinit_top_layers(model, 0) == []
    with pytest.raises(ValueError, match=r"n must be in \[0, num_hidden_layers=4\], got 5"):
        reinit_top_layers(model, 5)


def test_reinit_still_redraws_when_init_weights_skips_every_tensor(tmp_path, caplog):
    """Should transformers mark loaded tensors some other way than ``_is_hf_initialized`` (an internal),
    its ``_init_weights`` would leave them as they are: then one warning and the plain BERT init."""
    model = _pretrained_like(tmp_path, BertForQuestionAnswering)
    model.config.initializer_range = 0.5
    model._init_weights = lambda module: None  # a release whose init skips every loaded tensor
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with caplog.at_level("WARNING", logger="squad_qa.training.optim"):
        names = reinit_top_layers(model, 2)
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[n], before[n]) for n in names if not n.endswith("LayerNorm.bias")
               and not n.endswith(".bias"))
    assert 0.4 < params["bert.encoder.layer.3.intermediate.dense.weight"].std().item() < 0.6
    assert torch.equal(params["bert.encoder.layer.2.output.LayerNorm.weight"], torch.ones(32))
    assert torch.equal(params["bert.encoder.layer.1.output.dense.weight"], before["bert.encoder.layer.1.output.dense.weight"])
