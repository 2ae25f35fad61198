"""A bidirectional, two-layer LSTM with a projection, and the shape of everything it returns.

Runs one model on each input form (time-major, batch_first, unbatched, PackedSequence), prints the
shapes of output, h_n and c_n, and shows how to pick the last layer's forward and reverse states
out of h_n: [L*D, B, R], index = layer * D + direction.

    python examples/bidirectional_shapes.py               # fastrnn.LSTM
    python examples/bidirectional_shapes.py --impl torch  # torch.nn.LSTM: the same shapes and values
"""
import argparse

import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fastrnn

T, B, I, H, P, L = 6, 3, 5, 8, 4, 2  # time steps, batch, input, hidden, projection, layers


def run(lstm, batch_first):
    """{form: (output shape, h_n shape, c_n shape)} and the final states of the time-major run."""
    torch.manual_seed(1)
    x = torch.randn(T, B, I)
    lstm.batch_first = batch_first  # only changes how x and output are laid out
    shapes = {}
    out, (h_n, c_n) = lstm(x.transpose(0, 1) if batch_first else x)
    shapes["batch_first" if batch_first else "time-major"] = (tuple(out.shape), tuple(h_n.shape), tuple(c_n.shape))
    out_u, (h_u, c_u) = lstm(x[:, 0])  # unbatched: x [T, I], states [L*D, R]
    shapes["unbatched"] = (tuple(out_u.shape), tuple(h_u.shape), tuple(c_u.shape))
    packed = pack_sequence([x[:4, 0], x[:, 1], x[:2, 2]], enforce_sorted=False)  # lengths 4, 6, 2
    out_p, (h_p, c_p) = lstm(packed)
    padded, lengths = pad_packed_sequence(out_p)
    shapes["packed"] = (tuple(padded.shape), tuple(h_p.shape), tuple(c_p.shape))
    return shapes, out, h_n


def main(quick=False, impl="fastrnn", seed=0):
    """Print the shapes; return {'shapes': ..., 'last_layer_state': [B, 2P]} for comparison."""
    torch.manual_seed(seed)
    rnn_lib = fastrnn if impl == "fastrnn" else nn
    lstm = rnn_lib.LSTM(I, H, num_layers=L, bidirectional=True, proj_size=P)
    lstm.eval()
    print(lstm)
    shapes, out, h_n = run(lstm, batch_first=False)
    shapes["batch_first"] = run(lstm, batch_first=True)[0]["batch_first"]
    for form, (o, h, c) in shapes.items():
        print(f"  {form:<11} output {o}  h_n {h}  c_n {c}")
    # h_n: [L*D, B, P]; the last layer's forward state is h_n[-2], its reverse state h_n[-1].
    h_n = h_n.view(L, 2, B, P)
    last = torch.cat([h_n[-1, 0], h_n[-1, 1]], dim=-1)  # [B, 2P], what a classifier head reads
    # The same states sit in the output: forward at the last step, reverse at the first.
    assert torch.allclose(last[:, :P], out[-1, :, :P]) and torch.allclose(last[:, P:], out[0, :, P:])
    print(f"  last layer, both directions: {tuple(last.shape)} (= output[-1, :, :P] | output[0, :, P:])")
    return {"shapes": shapes, "last_layer_state": last.detach()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("fastrnn", "torch"), default="fastrnn")
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; this example is instant")
    args = parser.parse_args()
    main(quick=args.quick, impl=args.impl)
