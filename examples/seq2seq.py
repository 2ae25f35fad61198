"""Seq2seq: an LSTM encoder-decoder learns to reverse a sequence of digits.

The encoder's final (h_n, c_n) starts the decoder, which is trained with teacher forcing (the whole
shifted target in one call) and decodes greedily one step at a time (T = 1 calls that carry hx),
the two ways a decoder LSTM gets called.

    python examples/seq2seq.py               # fastrnn.LSTM
    python examples/seq2seq.py --impl torch  # torch.nn.LSTM, same seed, same accuracy
"""
import argparse

import torch
from torch import nn

import fastrnn

DIGITS, BOS = 10, 10  # tokens 0..9, then a begin-of-sequence token for the decoder


class Seq2Seq(nn.Module):
    def __init__(self, rnn_lib, hidden_size=64):
        super().__init__()
        self.embed = nn.Embedding(DIGITS + 1, 16)
        self.encoder = rnn_lib.LSTM(16, hidden_size)
        self.decoder = rnn_lib.LSTM(16, hidden_size)
        self.head = nn.Linear(hidden_size, DIGITS)

    def forward(self, src, tgt_in):
        """Teacher forcing. src: [T, B], tgt_in: [T, B] (BOS, then the target shifted right)
        -> logits: [T, B, DIGITS]."""
        _, state = self.encoder(self.embed(src))       # h_n, c_n: [1, B, H]
        out, _ = self.decoder(self.embed(tgt_in), state)  # [T, B, H]
        return self.head(out)

    @torch.no_grad()
    def generate(self, src):
        """Greedy decoding, one step per call. src: [T, B] -> [T, B]."""
        _, state = self.encoder(self.embed(src))
        token = torch.full((1, src.shape[1]), BOS, dtype=torch.long)
        outputs = []
        for _ in range(src.shape[0]):
            out, state = self.decoder(self.embed(token), state)  # out: [1, B, H]
            token = self.head(out).argmax(-1)
            outputs.append(token)
        return torch.cat(outputs)


def make_batch(batch_size, length, gen):
    """src: [T, B] digits, tgt: [T, B] = src reversed in time."""
    src = torch.randint(0, DIGITS, (length, batch_size), generator=gen)
    return src, src.flip(0)


def main(quick=False, impl="fastrnn", seed=0):
    """Train, then return {'accuracy': per-digit greedy accuracy, 'loss': last training loss}."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rnn_lib = fastrnn if impl == "fastrnn" else nn
    model = Seq2Seq(rnn_lib)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    length = 5
    for _ in range(80 if quick else 600):
        src, tgt = make_batch(64, length, gen)
        tgt_in = torch.cat([torch.full((1, tgt.shape[1]), BOS), tgt[:-1]])
        logits = model(src, tgt_in)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, tgt = make_batch(256, length, gen)
    accuracy = (model.generate(src) == tgt).float().mean().item()
    return {"accuracy": accuracy, "loss": loss.item()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("fastrnn", "torch"), default="fastrnn")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = main(quick=args.quick, impl=args.impl)
    print(f"{args.impl}: greedy per-digit accuracy {result['accuracy']:.3f}, last training loss {result['loss']:.4f}")
