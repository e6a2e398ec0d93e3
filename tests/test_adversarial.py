"""FGM / PGD on the word-embedding weights of a tiny random BERT."""

import contextlib
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from transformers import BertConfig, BertForQuestionAnswering

from squad_qa.training.adversarial import FGM, PGD

EMB = "bert.embeddings.word_embeddings.weight"


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # deterministic forwards
    )
    return BertForQuestionAnswering(cfg)


def batch():
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1, 100, (3, 16), generator=g),
        "start_positions": torch.tensor([0, 4, 9]),
        "end_positions": torch.tensor([0, 6, 12]),
    }


def loss_of(model):
    return model(**batch()).loss


def emb(model):
    return dict(model.named_parameters())[EMB] if EMB in dict(model.named_parameters()) else \
        dict(model.named_parameters())["module." + EMB]


def test_fgm_attack_adds_normalised_gradient_and_restore_is_exact():
    model = tiny_model()
    W = emb(model)
    loss_of(model).backward()
    w0, g = W.detach().clone(), W.grad.clone()
    fgm = FGM(model, epsilon=0.7)
    assert [n for n, _ in fgm.params] == [EMB]
    fgm.attack()
    expected = w0 + g * (0.7 / torch.linalg.vector_norm(g))
    assert torch.equal(W.detach(), expected)  # same float ops, so bit for bit
    assert torch.linalg.vector_norm(W.detach() - w0).item() == pytest.approx(0.7, rel=1e-5)
    fgm.restore()
    assert torch.equal(W.detach(), w0)


def test_fgm_training_step_accumulates_adversarial_gradient():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    W = emb(model)
    fgm = FGM(model, epsilon=1.0)
    clean = loss_of(model)
    clean.backward()
    g_clean = W.grad.clone()
    w0 = W.detach().clone()
    fgm.attack()
    adv = loss_of(model)
    assert adv.item() != clean.item()  # the perturbation changes the loss
    adv.backward()
    fgm.restore()
    assert torch.equal(W.detach(), w0)
    assert torch.isfinite(W.grad).all() and not torch.equal(W.grad, g_clean)
    opt.step()
    assert torch.allclose(W.detach(), w0 - 0.1 * W.grad, rtol=0, atol=1e-7)  # stepped from the clean weights


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_fgm_skips_zero_or_non_finite_gradient(bad):
    model = tiny_model()
    W = emb(model)
    W.grad = torch.full_like(W, bad)
    w0 = W.detach().clone()
    fgm = FGM(model)
    fgm.attack()
    assert torch.equal(W.detach(), w0)
    fgm.restore()
    assert torch.equal(W.detach(), w0)


def test_errors_are_clear():
    model = tiny_model()
    with pytest.raises(ValueError, match="matches no trainable parameter.*word_embeddings"):
        FGM(model, param_name="no_such_embedding")
    with pytest.raises(RuntimeError, match="call loss.backward"):
        FGM(model).attack()
    with pytest.raises(RuntimeError, match="without a preceding attack"):
        PGD(model).restore()
    with pytest.raises(ValueError, match="PGD needs steps >= 1, got 0"):
        PGD(model, steps=0)


def test_pgd_projects_onto_epsilon_ball_and_restores_exactly():
    model = tiny_model()
    W = emb(model)
    loss_of(model).backward()
    w0, g0 = W.detach().clone(), W.grad.clone()
    pgd = PGD(model, epsilon=1.0, alpha=0.6)
    pgd.backup_grad()
    norms = []
    for t in range(3):
        pgd.attack(is_first_attack=(t == 0))
        r = W.detach() - w0
        norms.append(torch.linalg.vector_norm(r).item())
        if t == 0:  # first step is inside the ball: exactly alpha * g / ||g||
            assert torch.allclose(r, g0 * (0.6 / torch.linalg.vector_norm(g0)), rtol=0, atol=1e-6)
        if t != 2:
            model.zero_grad()
        else:
            pgd.restore_grad()
            assert torch.equal(W.grad, g0)
        loss_of(model).backward()
    assert norms[0] == pytest.approx(0.6, rel=1e-5)
    assert all(n <= 1.0 + 1e-5 for n in norms)
    assert norms[-1] == pytest.approx(1.0, rel=1e-4)  # 3 * 0.6 > eps: the projection was active
    pgd.restore()
    assert torch.equal(W.detach(), w0)
    assert not torch.equal(W.grad, g0)  # clean + final adversarial gradient


def test_pgd_restore_grad_restores_every_parameter():
    model = tiny_model()
    loss_of(model).backward()
    saved = {n: p.grad.clone() for n, p in model.named_parameters()}
    pgd = PGD(model)
    pgd.backup_grad()
    pgd.attack(is_first_attack=True)
    model.zero_grad(set_to_none=True)
    loss_of(model).backward()
    pgd.restore_grad()
    pgd.restore()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, saved[n]), n


@contextlib.contextmanager
def single_process_group():
    # In-memory store: no rendezvous file that a concurrent pytest session could prune.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timedelta(seconds=60))
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_fgm_and_pgd_work_through_ddp():
    with single_process_group():
        ddp = torch.nn.parallel.DistributedDataParallel(tiny_model())
        fgm = FGM(ddp, epsilon=0.5)
        assert [n for n, _ in fgm.params] == ["module." + EMB]
        W = emb(ddp)
        w0 = W.detach().clone()
        ddp(**batch()).loss.backward()
        fgm.attack()
        assert torch.linalg.vector_norm(W.detach() - w0).item() == pytest.approx(0.5, rel=1e-5)
        ddp(**batch()).loss.backward()
        fgm.restore()
        assert torch.equal(W.detach(), w0)
        pgd = PGD(ddp)
        pgd.attack(is_first_attack=True)
        pgd.restore()
        assert torch.equal(W.detach(), w0)


@pytest.mark.parametrize("cls", [FGM, PGD])
def test_attack_steps_along_this_micro_batch_gradient_only(cls):
    """With gradient accumulation, .grad also holds earlier micro-batches: the attack must subtract them."""
    model = tiny_model()
    other = {**batch(), "start_positions": torch.tensor([3, 1, 2]), "end_positions": torch.tensor([5, 8, 2])}
    model(**other).loss.backward()  # an earlier micro-batch, with other targets
    adv = cls(model, epsilon=1.0) if cls is FGM else cls(model, epsilon=1.0, alpha=1.0)
    before = adv.snapshot_grads()
    earlier = emb(model).grad.clone()
    (2.0 * loss_of(model)).backward()  # this micro-batch: .grad = earlier + 2 * g
    own = emb(model).grad - earlier
    w0 = emb(model).detach().clone()
    if cls is FGM:
        adv.attack(grads_before=before)
    else:
        adv.attack(is_first_attack=True, grads_before=before)
    step = emb(model).detach() - w0
    torch.testing.assert_close(step, own / own.norm(), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(step, emb(model).grad / emb(model).grad.norm())
    adv.restore()
    assert torch.equal(emb(model).detach(), w0)
