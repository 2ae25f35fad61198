"""PackedSequence data <-> padded time-major tensors, with shapes that never depend on values.

A PackedSequence stores, step after step, the rows of the sequences still running at that step:
step t holds batch_sizes[t] rows, sequences sorted longest first. Row p of the packed data is
therefore step t = the first t with cumsum(batch_sizes)[t] > p and sequence b = p - (rows before
step t); in a padded [T, B] grid it sits at t * B + b. That map (`slots`) is a bijection between
the N packed rows and the valid cells of the grid, so padding is one scatter and packing one
gather, each with a unique index per row: deterministic, differentiable, and free of
data-dependent shapes, so torch.compile(fullgraph=True) traces them. (torch's own
`_pad_packed_sequence` reads batch_sizes[0] as a Python int, which Dynamo cannot trace.)

Shape letters: N packed rows (sum of lengths), T steps (= len(batch_sizes)), B sequences.
"""
import torch

__all__ = ["packed_batch", "pad", "pack"]


def packed_batch(packed):
    """The number of sequences B of a PackedSequence. sorted_indices has B entries and a static
    shape; without it (enforce_sorted=True) B is batch_sizes[0], read as a Python int."""
    if packed.sorted_indices is not None:
        return packed.sorted_indices.numel()
    return int(packed.batch_sizes[0])


def pad(data, batch_sizes, batch):
    """data [N, *] packed rows, batch_sizes [T] int64 (CPU), batch B ->
    (padded [T, B, *] with zeros past each sequence's end, lengths [B] int64 on data's device,
    slots [N]: each packed row's flat index t * B + b in the padded grid)."""
    sizes = batch_sizes.to(data.device)
    ends = torch.cumsum(sizes, 0)                                   # [T] rows up to step t
    rows = torch.arange(data.size(0), device=data.device)
    step = torch.searchsorted(ends, rows, right=True)               # [N] t of each packed row
    slots = step * batch + (rows - (ends - sizes)[step])            # [N] t * B + b
    T = batch_sizes.size(0)
    padded = data.new_zeros((T * batch, *data.shape[1:])).index_put((slots,), data)
    lengths = (sizes[:, None] > torch.arange(batch, device=data.device)).sum(0)
    return padded.view(T, batch, *data.shape[1:]), lengths, slots


def pack(padded, slots):
    """padded [T, B, *] -> packed rows [N, *]: the inverse of `pad` on the valid cells."""
    return padded.reshape(-1, *padded.shape[2:])[slots]
