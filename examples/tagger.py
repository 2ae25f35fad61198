"""Many-to-many: an Elman RNN or a GRU tags every token of variable-length sequences (PackedSequence).

Toy task: the tag of token t is the token at t-1 (0 at t = 0): the model must remember one step
back. Sequences have random lengths, so they are padded, packed with enforce_sorted=False, run
through the RNN, and unpacked; the loss ignores padding.

    python examples/tagger.py               # fastrnn.RNN
    python examples/tagger.py --impl torch  # torch.nn.RNN, same seed, same accuracy
    python examples/tagger.py --cell gru    # fastrnn.GRU (with --impl torch: torch.nn.GRU)
"""
import argparse

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastrnn

VOCAB, PAD = 8, -100  # tokens 0..7; PAD marks padded tags for cross_entropy's ignore_index


CELLS = {"rnn": "RNN", "gru": "GRU"}  # --cell -> the class, in fastrnn and in torch.nn


class Tagger(nn.Module):
    def __init__(self, rnn_lib, cell="rnn", hidden_size=32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.rnn = getattr(rnn_lib, CELLS[cell])(16, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, tokens, lengths):
        """tokens: [B, T] int64, lengths: [B] -> logits: [B, T, VOCAB] (zeros past each length)."""
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])  # [B, T, H]
        return self.head(out)


def make_batch(batch_size, max_len, gen):
    """tokens: [B, T], tags: [B, T] (PAD past each length), lengths: [B]."""
    lengths = torch.randint(2, max_len + 1, (batch_size,), generator=gen)
    tokens = torch.randint(0, VOCAB, (batch_size, max_len), generator=gen)
    tags = torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), tokens[:, :-1]], dim=1)
    tags[torch.arange(max_len) >= lengths.unsqueeze(1)] = PAD
    return tokens, tags, lengths


def main(quick=False, impl="fastrnn", seed=0, cell="rnn"):
    """Train, then return {'accuracy': per-token accuracy on fresh sequences, 'loss': last loss}."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rnn_lib = fastrnn if impl == "fastrnn" else nn
    model = Tagger(rnn_lib, cell)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60 if quick else 400):
        tokens, tags, lengths = make_batch(32, 12, gen)
        logits = model(tokens, lengths)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        tokens, tags, lengths = make_batch(256, 12, gen)
        pred = model(tokens, lengths).argmax(-1)
        valid = tags != PAD
        accuracy = (pred[valid] == tags[valid]).float().mean().item()
    return {"accuracy": accuracy, "loss": loss.item()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("fastrnn", "torch"), default="fastrnn")
    parser.add_argument("--cell", choices=tuple(CELLS), default="rnn")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = main(quick=args.quick, impl=args.impl, cell=args.cell)
    print(f"{args.impl} {CELLS[args.cell]}: per-token accuracy {result['accuracy']:.3f}, "
          f"last training loss {result['loss']:.4f}")
