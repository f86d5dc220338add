"""The contrast modules of CMC, InsDis and MoCo: hand-computed scores, Z, updates, the queue, checkpoint
round trips, autocast, and a 2-process gloo run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.cmc.contrast import CMCContrast, CMCScores, InsDisContrast, MoCoContrast

S = 1 / math.sqrt(2)
WORKER = Path(__file__).with_name("dist_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("selfsup_cmc_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cmc(**kwargs) -> CMCContrast:
    """N = 4, D = 2, K = 2, T = 0.5, with hand-set memories:
    memory_l  = [1, 0], [0, 1], [-1, 0], [0, -1]
    memory_ab = [0.6, 0.8], [0.8, 0.6], [-0.6, 0.8], [0, 1]"""
    contrast = CMCContrast(num_data=4, dim=2, num_negatives=2, temperature=0.5, **kwargs)
    contrast.memory_l.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    contrast.memory_ab.memory.copy_(torch.tensor([[0.6, 0.8], [0.8, 0.6], [-0.6, 0.8], [0.0, 1.0]]))
    return contrast


# l = [0, 1], ab = [1, 0], instance 0, negatives 1 and 3.
L, AB, INDEX, IDX = (
    torch.tensor([[0.0, 1.0]]),
    torch.tensor([[1.0, 0.0]]),
    torch.tensor([0]),
    torch.tensor([[0, 1, 3]]),
)


# ------------------------------------------------------------------------------------------------- CMC


def test_cmc_scores_each_view_against_the_other_views_memory():
    contrast = tiny_cmc(use_softmax=True)
    out = contrast(L, AB, INDEX, idx=IDX)
    assert isinstance(out, CMCScores)
    # out_l = ⟨memory_ab[0, 1, 3], l⟩ / T = [0.8, 0.6, 1.0] / 0.5
    torch.testing.assert_close(out.out_l, torch.tensor([[1.6, 1.2, 2.0]]))
    # out_ab = ⟨memory_l[0, 1, 3], ab⟩ / T = [1, 0, 0] / 0.5
    torch.testing.assert_close(out.out_ab, torch.tensor([[2.0, 0.0, 0.0]]))
    out_l, out_ab = out  # unpacks in the original's order
    assert out_l is out.out_l and out_ab is out.out_ab
    assert float(contrast.z_l) == -1.0 and float(contrast.z_ab) == -1.0  # softmax mode never sets Z


def test_cmc_updates_both_memories_with_their_own_view():
    contrast = tiny_cmc(use_softmax=True)
    contrast(L, AB, INDEX, idx=IDX)
    # memory_l[0] = normalize(0.5·[1, 0] + 0.5·l) = [s, s]; memory_ab[0] = normalize(0.5·[0.6, 0.8] + 0.5·ab)
    torch.testing.assert_close(contrast.memory_l.memory[0], torch.tensor([S, S]))
    torch.testing.assert_close(contrast.memory_ab.memory[0], torch.tensor([0.8944272, 0.4472136]))
    assert torch.equal(contrast.memory_l.memory[1:], torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_cmc_sets_z_once_from_the_first_batch_by_hand():
    contrast = tiny_cmc()
    out = contrast(L, AB, INDEX, idx=IDX)
    # Z_l = N · mean(exp([1.6, 1.2, 2.0])) = 4 · (4.953032 + 3.320117 + 7.389056) / 3
    assert math.isclose(float(contrast.z_l), 20.882941, rel_tol=1e-6)
    # Z_ab = 4 · (e² + 1 + 1) / 3
    assert math.isclose(float(contrast.z_ab), 12.518741, rel_tol=1e-6)
    torch.testing.assert_close(out.out_l, torch.tensor([[0.2371808, 0.1589870, 0.3538322]]))
    torch.testing.assert_close(out.out_ab, torch.tensor([[0.5902395, 0.0798802, 0.0798802]]))
    # frozen afterwards
    z_l, z_ab = contrast.z_l.clone(), contrast.z_ab.clone()
    out2 = contrast(AB, L, torch.tensor([2]), idx=torch.tensor([[2, 0, 0]]))
    assert torch.equal(contrast.z_l, z_l) and torch.equal(contrast.z_ab, z_ab)
    # out_l = exp(⟨memory_ab[2], ab⟩ / T) / Z_l with the unchanged Z_l
    expected = math.exp(-0.6 / 0.5) / 20.882941
    assert math.isclose(float(out2.out_l[0, 0]), expected, rel_tol=1e-5)


def test_cmc_scores_use_the_pre_update_rows():
    contrast = tiny_cmc(use_softmax=True)
    old_ab = contrast.memory_ab.memory.clone()
    lv = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    ab = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # sample 1 (instance 1) has instance 0 among its negatives; sample 0 has instance 1 among its own.
    out = contrast(lv, ab, torch.tensor([0, 1]), idx=torch.tensor([[0, 1, 1], [1, 0, 0]]))
    torch.testing.assert_close(out.out_l[1], (old_ab[[1, 0, 0]] @ lv[1]) / 0.5)
    torch.testing.assert_close(out.out_l[0], (old_ab[[0, 1, 1]] @ lv[0]) / 0.5)
    assert not torch.equal(contrast.memory_ab.memory[:2], old_ab[:2])  # and the rows did change afterwards


def test_cmc_sampled_negatives_follow_the_generator_and_keep_the_positive_first():
    contrast = CMCContrast(num_data=50, dim=8, num_negatives=7, generator=torch.Generator().manual_seed(0))
    twin = CMCContrast(num_data=50, dim=8, num_negatives=7, generator=torch.Generator().manual_seed(0))
    lv, ab = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    index = torch.tensor([0, 10, 20, 30, 49])
    idx = twin.memory_l.sample_indices(index, 7, generator=torch.Generator().manual_seed(3))
    a = contrast(lv, ab, index, generator=torch.Generator().manual_seed(3))
    b = twin(lv, ab, index, idx=idx)
    assert torch.equal(a.out_l, b.out_l) and torch.equal(a.out_ab, b.out_ab)
    assert a.out_l.shape == (5, 8)


def test_cmc_gradients_reach_the_features_not_the_memory():
    contrast = CMCContrast(num_data=20, dim=8, num_negatives=4)
    lv = F.normalize(torch.randn(3, 8), dim=1).requires_grad_(True)
    ab = F.normalize(torch.randn(3, 8), dim=1).requires_grad_(True)
    out = contrast(lv, ab, torch.tensor([1, 2, 3]))
    out.out_l.sum().backward(retain_graph=True)
    assert lv.grad is not None and ab.grad is None  # out_l depends on l only
    out.out_ab.sum().backward()
    assert ab.grad is not None
    assert all(not b.requires_grad for b in contrast.buffers())


def test_cmc_is_fp32_under_autocast():
    kwargs = dict(num_data=20, dim=8, num_negatives=4)
    a = CMCContrast(**kwargs, generator=torch.Generator().manual_seed(0))
    b = CMCContrast(**kwargs, generator=torch.Generator().manual_seed(0))
    lv, ab = (
        F.normalize(torch.randn(3, 8), dim=1).bfloat16(),
        F.normalize(torch.randn(3, 8), dim=1).bfloat16(),
    )
    index, idx = torch.tensor([1, 2, 3]), torch.tensor([[1, 5, 6, 7, 8], [2, 0, 0, 9, 9], [3, 19, 18, 17, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_a = a(lv, ab, index, idx=idx)
    out_b = b(lv.float(), ab.float(), index, idx=idx)
    assert out_a.out_l.dtype == torch.float32 and a.memory_l.memory.dtype == torch.float32
    assert torch.equal(out_a.out_l, out_b.out_l) and torch.equal(out_a.out_ab, out_b.out_ab)
    assert torch.equal(a.memory_ab.memory, b.memory_ab.memory)


def test_cmc_validates_arguments_and_shapes():
    with pytest.raises(ValueError, match="--nce_k"):
        CMCContrast(num_data=10, num_negatives=0)
    with pytest.raises(ValueError, match="--nce_m"):
        CMCContrast(num_data=10, momentum=1.5)
    with pytest.raises(ValueError, match="--nce_t"):
        CMCContrast(num_data=10, temperature=0.0)
    contrast = tiny_cmc()
    with pytest.raises(ValueError, match="ab must be"):
        contrast(L, torch.ones(1, 3), INDEX)
    with pytest.raises(ValueError, match="index must be"):
        contrast(L, AB, torch.tensor([[0]]))
    with pytest.raises(ValueError, match="idx must be"):
        contrast(L, AB, INDEX, idx=torch.tensor([[0, 1]]))


def test_cmc_original_state_round_trip():
    contrast = tiny_cmc(momentum=0.25)
    contrast(L, AB, INDEX, idx=IDX)
    state = contrast.original_state_dict()
    assert sorted(state) == ["memory_ab", "memory_l", "params"]
    expected = torch.tensor([2.0, 0.5, float(contrast.z_l), float(contrast.z_ab), 0.25])
    assert state["params"].dtype == torch.float32 and torch.equal(state["params"], expected)
    assert torch.equal(state["memory_l"], contrast.memory_l.memory)
    # the buffer itself: saved beside state_dict(), torch.save stores the memory once
    assert state["memory_l"].data_ptr() == contrast.memory_l.memory.data_ptr()
    fresh = CMCContrast(num_data=4, dim=2, num_negatives=2, temperature=0.5, momentum=0.25)
    fresh.load_original_state_dict(state)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in contrast.state_dict().items())
    assert all(torch.equal(v, fresh.original_state_dict()[k]) for k, v in state.items())
    other_t = CMCContrast(num_data=4, dim=2, num_negatives=2, temperature=0.07, momentum=0.25)
    with pytest.raises(ValueError, match=r"--nce_t 0\.5"):
        other_t.load_original_state_dict(state)
    other_t.load_original_state_dict(state, strict=False)
    with pytest.raises(KeyError, match=r"keys \['memory', 'params'\]"):
        fresh.load_original_state_dict({"params": state["params"], "memory": state["memory_l"]})
    with pytest.raises(ValueError, match="shape"):
        CMCContrast(num_data=5, dim=2, num_negatives=2, temperature=0.5).load_original_state_dict(state)


def test_cmc_resume_from_state_dict_is_bitwise():
    kwargs = dict(num_data=30, dim=8, num_negatives=6)
    data = torch.Generator().manual_seed(9)
    batches = [
        (
            F.normalize(torch.randn(4, 8, generator=data), dim=1),
            F.normalize(torch.randn(4, 8, generator=data), dim=1),
        )
        for _ in range(3)
    ]
    index = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 0, 5, 6]), torch.tensor([0, 1, 7, 8])]
    run = CMCContrast(**kwargs, generator=torch.Generator().manual_seed(0))
    negatives = torch.Generator().manual_seed(1)
    run(*batches[0], index[0], generator=negatives)
    checkpoint = {
        "contrast": {k: v.clone() for k, v in run.state_dict().items()},
        "rng": negatives.get_state(),
    }
    expected = [run(*batches[i], index[i], generator=negatives) for i in (1, 2)]
    resumed = CMCContrast(**kwargs, generator=torch.Generator().manual_seed(5))
    resumed.load_state_dict(checkpoint["contrast"])
    negatives_resumed = torch.Generator()
    negatives_resumed.set_state(checkpoint["rng"])
    for i, exp in zip((1, 2), expected):
        got = resumed(*batches[i], index[i], generator=negatives_resumed)
        assert torch.equal(got.out_l, exp.out_l) and torch.equal(got.out_ab, exp.out_ab)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in run.state_dict().items())
    assert sorted(run.state_dict()) == ["memory_ab.memory", "memory_l.memory", "z_ab", "z_l"]


# ---------------------------------------------------------------------------------------------- InsDis


def tiny_insdis(**kwargs) -> InsDisContrast:
    """N = 3, D = 2, K = 2, T = 1; memory = [1, 0], [0, 1], [s, s]."""
    contrast = InsDisContrast(num_data=3, dim=2, num_negatives=2, temperature=1.0, **kwargs)
    contrast.memory.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [S, S]]))
    return contrast


def test_insdis_scores_its_own_row_first_and_updates_it():
    contrast = tiny_insdis(use_softmax=True)
    out = contrast(torch.tensor([[0.6, 0.8]]), torch.tensor([1]), idx=torch.tensor([[1, 0, 2]]))
    torch.testing.assert_close(out, torch.tensor([[0.8, 0.6, 1.4 * S]]))
    # memory[1] = normalize(0.5·[0, 1] + 0.5·[0.6, 0.8]) = [0.3, 0.9] / √0.9
    torch.testing.assert_close(contrast.memory.memory[1], torch.tensor([0.3162278, 0.9486833]))
    assert float(contrast.z) == -1.0


def test_insdis_z_by_hand_and_original_state():
    contrast = tiny_insdis()
    out = contrast(torch.tensor([[0.6, 0.8]]), torch.tensor([1]), idx=torch.tensor([[1, 0, 2]]))
    # Z = N · mean(exp([0.8, 0.6, 0.98995])) = 3 · (2.225541 + 1.822119 + 2.691098) / 3
    assert math.isclose(float(contrast.z), 6.738758, rel_tol=1e-6)
    torch.testing.assert_close(out, torch.tensor([[0.3302598, 0.2703939, 0.3993464]]))
    state = contrast.original_state_dict()
    assert sorted(state) == ["memory", "params"]
    assert torch.equal(state["params"], torch.tensor([2.0, 1.0, float(contrast.z), 0.5]))
    fresh = InsDisContrast(num_data=3, dim=2, num_negatives=2, temperature=1.0)
    fresh.load_original_state_dict(state)
    assert torch.equal(fresh.memory.memory, contrast.memory.memory) and torch.equal(fresh.z, contrast.z)
    with pytest.raises(ValueError, match=r"--nce_m 0\.5"):
        InsDisContrast(
            num_data=3, dim=2, num_negatives=2, temperature=1.0, momentum=0.9
        ).load_original_state_dict(state)


def test_insdis_samples_negatives_when_no_idx_is_given():
    contrast = InsDisContrast(num_data=40, dim=8, num_negatives=5, use_softmax=True)
    x = F.normalize(torch.randn(3, 8), dim=1)
    memory = contrast.memory.memory.clone()
    out = contrast(x, torch.tensor([4, 5, 6]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 6)
    torch.testing.assert_close(out[:, 0], (memory[[4, 5, 6]] * x).sum(1) / 0.07)


# ------------------------------------------------------------------------------------------------ MoCo


def tiny_moco(**kwargs) -> MoCoContrast:
    """N = 100, D = 2, K = 5, T = 1; queue = [1, 0], [0, 1], [-1, 0], [0, -1], [s, s]."""
    contrast = MoCoContrast(num_data=100, dim=2, queue_size=5, temperature=1.0, **kwargs)
    contrast.queue.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [S, S]]))
    return contrast


def test_moco_logits_use_the_queue_before_this_batch_enters_it():
    contrast = tiny_moco(use_softmax=True)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]], requires_grad=True)
    out = contrast(q, k)
    expected = torch.tensor([[0.6, 1.0, 0.0, -1.0, 0.0, S], [0.0, 0.0, 1.0, 0.0, -1.0, S]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(contrast.queue[:2], k.detach()) and int(contrast.queue_ptr) == 2
    out.sum().backward()
    assert q.grad is not None and k.grad is None  # keys and queue carry no gradient
    assert not contrast.queue.requires_grad


def test_moco_enqueue_wraps_around_and_keeps_the_last_keys_of_a_large_batch():
    contrast = tiny_moco()
    contrast.queue.zero_()
    keys = torch.arange(1.0, 14.0).unsqueeze(1).expand(13, 2)
    contrast.enqueue(keys[0:2])  # slots 0, 1
    contrast.enqueue(keys[2:4])  # slots 2, 3
    assert int(contrast.queue_ptr) == 4
    contrast.enqueue(keys[4:6])  # slots 4, 0 (wraps)
    assert int(contrast.queue_ptr) == 1
    assert contrast.queue[:, 0].tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    # 7 keys from slot 1: slots 1 2 3 4 0 1 2, the later keys win; ptr = (1 + 7) mod 5 = 3
    contrast.enqueue(keys[6:13])
    assert contrast.queue[:, 0].tolist() == [11.0, 12.0, 13.0, 9.0, 10.0]
    assert int(contrast.queue_ptr) == 3
    reference = torch.zeros(5, 2)  # the original's index_copy_ at (arange(n) + ptr) mod K
    for batch, ptr in ((keys[0:2], 0), (keys[2:4], 2), (keys[4:6], 4), (keys[6:13], 1)):
        reference.index_copy_(0, torch.fmod(torch.arange(batch.shape[0]) + ptr, 5), batch)
    assert torch.equal(contrast.queue, reference)


def test_moco_queue_init_is_uniform_noise_not_normalised():
    contrast = MoCoContrast(num_data=10, dim=128, queue_size=512, generator=torch.Generator().manual_seed(0))
    sigma = 1 / math.sqrt(128 / 3)
    assert float(contrast.queue.abs().max()) < sigma
    assert float(contrast.queue.norm(dim=1).std()) > 0.01


def test_moco_nce_z_and_original_state():
    contrast = tiny_moco()
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    out = contrast(q, k)
    logits = torch.tensor([0.6, 1.0, 0.0, -1.0, 0.0, S])
    z = 100 * logits.exp().mean()  # N · mean over [B, 1+K], the positive included
    torch.testing.assert_close(contrast.z, z)
    torch.testing.assert_close(out, (logits.exp() / z).unsqueeze(0))
    state = contrast.original_state_dict()
    assert sorted(state) == ["memory", "params"] and state["params"].shape == (1,)
    assert torch.equal(state["params"][0], contrast.z) and torch.equal(state["memory"], contrast.queue)
    fresh = MoCoContrast(num_data=100, dim=2, queue_size=5, temperature=1.0)
    fresh.queue_ptr.fill_(4)
    fresh.load_original_state_dict(state)
    assert torch.equal(fresh.queue, contrast.queue) and torch.equal(fresh.z, contrast.z)
    assert int(fresh.queue_ptr) == 0  # not in the original state: restarts at 0 as the original did
    assert sorted(contrast.state_dict()) == ["queue", "queue_ptr", "z"]  # ours keeps the pointer


# -------------------------------------------------------------------------------- 2-process gloo run


@pytest.mark.distributed
def test_two_ranks_hold_identical_state_equal_to_one_process_and_score_their_half(tmp_path, torchrun):
    proc = torchrun(str(WORKER), str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two_ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    worker = _load_worker()
    single_process = worker.step(worker.build(), worker.global_batch(), slice(None))

    assert [int(r["world"]) for r in two_ranks] == [2, 2]
    state_keys = [k for k in single_process if "." in k]
    assert {"cmc.memory_l.memory", "cmc.z_l", "moco.queue_ptr", "insdis.memory.memory"} <= set(state_keys)
    for key in state_keys:
        assert torch.equal(two_ranks[0][key], two_ranks[1][key]), key  # identical on both ranks
    for key in state_keys:
        if key.split(".")[-1] in ("z", "z_l", "z_ab"):  # mean of the ranks' means vs one mean: rounding only
            torch.testing.assert_close(two_ranks[0][key], single_process[key], rtol=1e-6, atol=0)
            assert float(two_ranks[0][key]) > 0
        else:  # memories, queue and pointer: bitwise
            assert torch.equal(two_ranks[0][key], single_process[key]), key
    assert int(two_ranks[0]["moco.queue_ptr"]) == 6 % 5  # both ranks' 3 keys entered the queue

    # each rank scores its half of the batch as one process scores those rows of the whole batch
    for name in ("out_l", "out_ab", "out_ins", "out_moco"):
        full = torch.cat([two_ranks[0][name], two_ranks[1][name]])
        torch.testing.assert_close(full, single_process[name], rtol=1e-5, atol=0)
        assert full.shape[0] == 2 * worker.ROWS_PER_RANK


def test_scores_backward_equals_autograds_bmm_and_finite_differences():
    from selfsup.cmc.contrast import _scores

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 9, 6, generator=generator)
    anchors = torch.randn(4, 6, generator=generator, requires_grad=True)
    grad = torch.randn(4, 9, generator=generator)
    _scores(rows, anchors).backward(grad)
    ours = anchors.grad.clone()
    anchors.grad = None
    torch.bmm(rows, anchors.view(4, 6, 1)).view(4, -1).backward(grad)
    assert torch.allclose(ours, anchors.grad, atol=1e-6)
    rows64 = rows.double()
    anchors64 = anchors.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: _scores(rows64, a), (anchors64,))
