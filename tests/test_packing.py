"""fastrnn.packing: PackedSequence data <-> padded grid, against torch's own pad/pack."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from fastrnn import packing


@pytest.mark.parametrize("lengths", [[1], [4, 4, 4], [7, 1, 3, 3, 5], [2, 6]])
def test_pad_and_pack_match_torch(lengths):
    torch.manual_seed(0)
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in lengths]
    packed = pack_sequence(seqs, enforce_sorted=False)
    B = packing.packed_batch(packed)
    assert B == len(lengths) == int(packed.batch_sizes[0])
    padded, got_lengths, slots = packing.pad(packed.data, packed.batch_sizes, B)
    # torch pads in the caller's order; packing.pad keeps the packed (sorted) order
    want, want_lengths = pad_packed_sequence(packed._replace(unsorted_indices=None, sorted_indices=None))
    assert torch.equal(padded, want)
    assert torch.equal(got_lengths, want_lengths)
    assert sorted(slots.tolist()) == slots.unique().tolist()  # one grid cell per packed row
    assert torch.equal(packing.pack(padded, slots), packed.data)


def test_pad_and_pack_are_differentiable_inverses():
    torch.manual_seed(0)
    packed = pack_sequence([torch.randn(n, 2, dtype=torch.float64) for n in (5, 2, 4)],
                           enforce_sorted=False)
    data = packed.data.requires_grad_()
    B = packing.packed_batch(packed)
    torch.autograd.gradcheck(lambda d: packing.pad(d, packed.batch_sizes, B)[0], (data,))
    padded = torch.randn(5, B, 2, dtype=torch.float64, requires_grad=True)
    slots = packing.pad(data, packed.batch_sizes, B)[2]
    torch.autograd.gradcheck(lambda p: packing.pack(p, slots), (padded,))
