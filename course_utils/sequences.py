"""The toy translation task of notebooks 00 and 09, and a small seq2seq training loop.

The task: read a string of digits, write it reversed. Tokens: PAD = 0, BOS = 1, EOS = 2, digit k is
``k + 3``. A model is any ``nn.Module`` with ``model(src, tgt_in) -> logits`` of shape
(b, len(tgt_in), VOCAB_SIZE), where ``tgt_in`` is the target shifted right behind a BOS.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

PAD, BOS, EOS = 0, 1, 2
VOCAB_SIZE = 13


def to_text(tokens: Tensor) -> str:
    """Digits up to the first EOS (or PAD): ``tensor([4, 5, 2]) -> '12'``."""
    text = []
    for token in tokens.tolist():
        if token in (EOS, PAD):
            break
        text.append(str(token - 3) if token >= 3 else "^")
    return "".join(text)


def reversal_batch(
    batch_size: int, min_len: int, max_len: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random digit strings and their reversals.

    Returns:
        src: (b, max_len) digits, PAD after each string's end.
        tgt: (b, max_len + 1) the reversed digits, then EOS, then PAD.
    """
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    digits = torch.randint(3, VOCAB_SIZE, (batch_size, max_len), generator=generator)
    positions = torch.arange(max_len)
    src = torch.where(positions < lengths[:, None], digits, PAD)
    reversed_index = (lengths[:, None] - 1 - positions).clamp(min=0)
    tgt = torch.full((batch_size, max_len + 1), PAD)
    tgt[:, :max_len] = torch.where(positions < lengths[:, None], src.gather(1, reversed_index), PAD)
    tgt[torch.arange(batch_size), lengths] = EOS
    return src, tgt


def sequence_loss(logits: Tensor, tgt: Tensor) -> Tensor:
    """Cross-entropy over every target token, padding ignored."""
    return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD)


def train_seq2seq(
    model: nn.Module,
    decoder_input: Callable[[Tensor], Tensor],
    steps: int = 1000,
    batch_size: int = 64,
    min_len: int = 1,
    max_len: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Train ``model`` on reversal with teacher forcing and Adam; return the loss of every step.

    ``decoder_input(tgt)`` builds the decoder's input from the target (the notebook's shift right).
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    progress = tqdm(range(steps), desc="training", leave=False)
    for _ in progress:
        src, tgt = (t.to(device) for t in reversal_batch(batch_size, min_len, max_len, generator))
        loss = sequence_loss(model(src, decoder_input(tgt)), tgt)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return losses


@torch.no_grad()
def greedy_decode(model: nn.Module, src: Tensor, max_len: int) -> Tensor:
    """Generate up to ``max_len`` tokens, each the most likely next one given those before it."""
    model.eval()
    out = torch.full((src.shape[0], 1), BOS, device=src.device)
    for _ in range(max_len):
        next_token = model(src, out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, next_token], dim=1)
        if (out == EOS).any(dim=1).all():
            break
    return out[:, 1:]


def exact_match(predicted: Tensor, tgt: Tensor) -> float:
    """Share of sequences whose prediction equals the target up to and including EOS."""
    return sum(
        to_text(p) == to_text(t) and EOS in p.tolist() for p, t in zip(predicted, tgt, strict=True)
    ) / len(tgt)


def accuracy_by_length(
    model: nn.Module, lengths: list[int], n: int = 200, seed: int = 123, device: torch.device | str = "cpu"
) -> dict[int, float]:
    """Exact-match accuracy of greedy decoding on ``n`` fresh strings of each length."""
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for length in lengths:
        src, tgt = reversal_batch(n, length, length, generator)
        predicted = greedy_decode(model, src.to(device), max_len=length + 1).cpu()
        scores[length] = exact_match(predicted, tgt)
    return scores
