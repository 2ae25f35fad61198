"""Many-to-one: an LSTM reads an 8x8 digit image row by row and classifies it from its last state.

Uses scikit-learn's bundled digits (1797 images, nothing downloaded). Each image is a sequence of
T = 8 rows of I = 8 pixels; the final hidden state h_n[-1]: [B, H] feeds a linear classifier.

    python examples/digits_classifier.py               # fastrnn.LSTM
    python examples/digits_classifier.py --impl torch  # torch.nn.LSTM, same seed, same accuracy
"""
import argparse

import torch
from torch import nn

import fastrnn


class RowClassifier(nn.Module):
    def __init__(self, rnn_lib, hidden_size=64, num_classes=10):
        super().__init__()
        self.lstm = rnn_lib.LSTM(8, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, images):
        """images: [B, 8, 8] (batch, rows = time, pixels) -> logits: [B, 10]."""
        _, (h_n, _) = self.lstm(images)  # h_n: [1, B, H]
        return self.head(h_n[-1])


def load_digits_split(seed=0):
    """(x_train, y_train, x_test, y_test); x: [N, 8, 8] scaled to [0, 1], y: [N] class ids."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_test = len(y) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def main(quick=False, impl="fastrnn", seed=0):
    """Train, then return {'accuracy': test accuracy, 'loss': last training loss}."""
    torch.manual_seed(seed)
    rnn_lib = fastrnn if impl == "fastrnn" else nn
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    epochs = 3 if quick else 12
    if quick:
        x_train, y_train = x_train[:512], y_train[:512]
    model = RowClassifier(rnn_lib)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    return {"accuracy": accuracy, "loss": loss.item()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("fastrnn", "torch"), default="fastrnn")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = main(quick=args.quick, impl=args.impl)
    print(f"{args.impl}: test accuracy {result['accuracy']:.3f}, last training loss {result['loss']:.4f}")
