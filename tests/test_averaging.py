"""EMA / SWA through torch.optim.swa_utils on a tiny random BERT."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel
from transformers import BertConfig, BertForQuestionAnswering

from squad_qa.training.averaging import (
    averaged_module,
    averaged_state_dict,
    check_no_batchnorm,
    load_averaged_state_dict,
    make_ema,
    make_swa,
    make_swa_scheduler,
)

NAME = "bert.encoder.layer.2.attention.self.query.weight"


def tiny_model(seed=0, positions=64):
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=positions,
    )
    return BertForQuestionAnswering(cfg)


def train_steps(model, opt, n, on_step):
    g = torch.Generator().manual_seed(3)
    for _ in range(n):
        ids = torch.randint(1, 100, (4, 16), generator=g)
        out = model(input_ids=ids, start_positions=torch.tensor([0, 3, 5, 7]), end_positions=torch.tensor([0, 4, 9, 7]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        on_step()


def param(model, name=NAME):
    return dict(model.named_parameters())[name].detach()


def test_ema_matches_hand_computed_average():
    model = tiny_model(positions=512)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    decay = 0.9
    ema = make_ema(model, decay)
    hand = []

    def on_step():
        ema.update_parameters(model)
        w = param(model).clone()
        hand.append(w if not hand else decay * hand[-1] + (1 - decay) * w)

    train_steps(model, opt, 6, on_step)
    avg = averaged_module(ema)
    assert isinstance(avg, BertForQuestionAnswering)
    assert int(ema.n_averaged) == 6
    assert torch.allclose(param(avg), hand[-1], rtol=0, atol=1e-6)
    assert not torch.allclose(param(avg), param(model), rtol=0, atol=1e-4)  # really lags behind
    # Integer index buffers are copied, not EMA-rounded (torch would truncate e.g. 3 -> 2).
    assert torch.equal(avg.bert.embeddings.position_ids, model.bert.embeddings.position_ids)
    assert torch.equal(avg.bert.embeddings.position_ids[0], torch.arange(512))


def test_swa_is_mean_of_snapshots():
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    swa = make_swa(model)
    snaps = []

    def on_step():
        swa.update_parameters(model)
        snaps.append({n: p.detach().clone() for n, p in model.named_parameters()})

    train_steps(model, opt, 4, on_step)
    avg = averaged_module(swa)
    for name, p in avg.named_parameters():
        mean = torch.stack([s[name] for s in snaps]).mean(0)
        assert torch.allclose(p.detach(), mean, rtol=0, atol=1e-6), name
    assert not torch.allclose(param(avg), param(model), rtol=0, atol=1e-4)


def test_state_dict_round_trip_resumes_identically(tmp_path):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = make_ema(model, 0.8)
    train_steps(model, opt, 2, lambda: ema.update_parameters(model))
    path = tmp_path / "ema.safetensors"
    save_file(averaged_state_dict(ema), path)

    other = make_ema(tiny_model(seed=1), 0.8)
    load_averaged_state_dict(other, load_file(path))
    assert int(other.n_averaged) == 2
    for (n, a), (_, b) in zip(ema.module.named_parameters(), other.module.named_parameters()):
        assert torch.equal(a, b), n
    ema.update_parameters(model)
    other.update_parameters(model)
    assert torch.equal(param(ema.module), param(other.module))

    with pytest.raises(ValueError, match="n_averaged"):
        load_averaged_state_dict(other, {k: v for k, v in averaged_state_dict(ema).items() if k != "n_averaged"})


def test_swalr_anneals_every_group_to_swa_lr():
    model = tiny_model()
    opt = torch.optim.SGD(
        [{"params": model.qa_outputs.parameters(), "lr": 1.0}, {"params": model.bert.parameters(), "lr": 0.5}], lr=1.0
    )
    sched = make_swa_scheduler(opt, [0.1, 0.05], anneal_steps=4)
    lrs = []
    for _ in range(6):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    assert lrs[-1] == pytest.approx([0.1, 0.05])
    assert lrs[0][0] > 0.1 and lrs[0][0] < 1.0  # annealing, not a jump


def test_bad_arguments_and_batchnorm_rejected():
    with pytest.raises(ValueError, match="decay"):
        make_ema(tiny_model(), 1.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        check_no_batchnorm(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))
    check_no_batchnorm(tiny_model())  # LayerNorm only: fine
    assert isinstance(make_swa(tiny_model()), AveragedModel)
