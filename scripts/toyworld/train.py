#!/usr/bin/env python3
"""Train the toy-world CLIP (a small Hugging Face CLIPModel) contrastively on rendered products, and export it.

    .venv-fixtures/bin/python scripts/toyworld/train.py --out models/toy-world-clip

Seeded and reproducible on CPU (torch.set_num_threads(2), deterministic algorithms; the renders are a
pure function of their seeds). The export, the tokenizer (the real CLIP BPE vocabulary) and the
export checks are scripts/make_clip_fixture.py's. Writes the model dir; evaluate.py then measures
the exported ONNX files and writes the metrics and the calibrated relevance floor.

Recipe: each step takes B renders and one random caption per render (several phrasings; any
attribute may be left unsaid), plus out-of-world negative captions (a fixed word list and random
BPE tokens). The loss is CLIP's symmetric cross-entropy, with soft targets: a caption is a positive
for every image in the batch it is true of ("red mug" fits a red striped mug too), and a negative
caption is a positive for none (plus a hinge keeping its cosine to every image below NEG_MARGIN, so
that a relevance floor can drop it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402
from toyworld.common import TRAIN_SEEDS, mcf, pixel_values, pad_ids  # noqa: E402

import numpy as np  # noqa: E402

SEED = 20261130
NAME = "toy-world-clip"
ARCH = dict(
    # The ViT tower CLIPConfig requires; unused (see ConvTower) and not exported.
    vision=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=16,
                image_size=world.SIZE),
    # The image tower that is trained and exported: channel widths of its stride-2 stages.
    conv_widths=(24, 48, 96, 128),
    text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
              max_position_embeddings=mcf.MAX_TEXT_LEN, vocab_size=mcf.VOCAB_SIZE),
    projection_dim=64,
)
NEG_MARGIN = 0.1
PROBE_WEIGHT = 0.0  # the committed model: no probes (400 steps with weight 1 reached only 25% category)


def make_config():
    from transformers import CLIPConfig
    text = dict(ARCH["text"], eos_token_id=mcf.EOS_ID, bos_token_id=mcf.BOS_ID, pad_token_id=mcf.PAD_ID,
                hidden_act="quick_gelu", projection_dim=ARCH["projection_dim"])
    vision = dict(ARCH["vision"], hidden_act="quick_gelu", projection_dim=ARCH["projection_dim"], num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=ARCH["projection_dim"],
                      logit_scale_init_value=math.log(1 / 0.07))


def new_model(attn: str):
    from transformers import CLIPModel
    cfg = make_config()
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = attn
    return CLIPModel(cfg), cfg


def conv_tower(widths, dim):
    """The image tower: a small CNN, as in CLIP's ResNet image encoders, not a ViT.

    A ViT trained from scratch here learned colour and pattern but not shape: category accuracy
    stayed at 42-44% with patch 16 and with patch 8 (800 steps), and a linear probe on its image
    embeddings reached only 43%, so the tower itself had not learned categories. Convolutions'
    locality learns outlines from this little data. Each stage is a stride-2 3x3 conv (64 px -> 4 px
    after four), the last two followed by a 3x3 conv at their resolution (a receptive field of the
    whole render); batch norm and ReLU after each conv, global average pooling, and a linear
    projection to the joint space. About 7M multiply-adds per 64 px image. The exported graph takes `pixel_values` [N, 3, S, S]
    and returns `image_embeds` [N, dim], the model-dir contract.
    """
    import torch
    from torch import nn

    class ConvTower(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for i, w in enumerate(widths):
                layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                if i >= len(widths) - 2:
                    layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
            self.features = nn.Sequential(*layers)
            self.proj = nn.Linear(c, dim)

        def forward(self, pixel_values):
            return self.proj(torch.flatten(self.features(pixel_values).mean((2, 3)), 1))

    return ConvTower()


def compatible(img_attrs, cap_attrs) -> bool:
    return all(c is None or c == a for a, c in zip(img_attrs, cap_attrs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-train", type=int, default=24_000, help="distinct training renders")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--negatives", type=int, default=24, help="out-of-world captions per batch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe-weight", type=float, default=PROBE_WEIGHT, help="weight of the attribute-probe loss")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    t0 = time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    tok_path = mcf.build_tokenizer(out)
    tres = mcf.check_tokenizer(tok_path)
    assert not tres["mismatches"], tres["mismatches"]
    tok = Tokenizer.from_file(str(tok_path))
    id_cache: dict[str, list[int]] = {}

    def ids_of(s):
        v = id_cache.get(s)
        if v is None:
            v = id_cache[s] = tok.encode(s).ids
        return v

    # data: distinct renders, seeds from the training range only
    seeds = list(range(TRAIN_SEEDS[0], TRAIN_SEEDS[0] + args.n_train))
    assert seeds[-1] < TRAIN_SEEDS[1]
    products = [world.product_for_seed(s) for s in seeds]
    imgs = world.render_many(products, seeds, procs=args.threads)
    px_all = torch.from_numpy(pixel_values(imgs))
    del imgs
    t_render = time.time() - t0
    print(f"rendered {len(products)} training images in {t_render:.0f}s", flush=True)

    world_tokens = set()
    for s in [world.product_text(p) for p in products[:2000]] + [
            w for ws in list(world.CATEGORY_WORDS.values()) + list(world.COLOR_WORDS.values())
            + list(world.PATTERN_ADJ.values()) + list(world.PATTERN_NOUN.values()) for w in ws]:
        world_tokens.update(ids_of(s))
    for extra in ["a photo of a", "something", "pattern", "product", "colored", "in", "with"]:
        world_tokens.update(ids_of(extra))
    rand_pool = np.array([i for i in range(256, mcf.BOS_ID) if i not in world_tokens])

    model, cfg = new_model("sdpa")
    model.train()
    _, txt_tower = mcf.make_wrappers(model)  # the exported text forward: projected pooler output
    vis_tower = conv_tower(ARCH["conv_widths"], ARCH["projection_dim"])
    vis_tower.train()
    txt_tower.train()
    # The 49,408-row token table gets sparse gradients (only the rows a batch uses) and its own
    # SparseAdam: a dense AdamW update of the whole table was most of a step's time.
    token_emb = model.text_model.embeddings.token_embedding
    token_emb.sparse = True
    decay, no_decay = [], []
    for n, p in list(model.named_parameters()) + [("vision." + n, p) for n, p in vis_tower.named_parameters()]:
        if p is token_emb.weight or n.startswith(("vision_model.", "visual_projection.")):
            continue  # the token table has its own optimizer; CLIPModel's ViT is unused
        (no_decay if p.ndim < 2 or "embedding" in n or n == "logit_scale" else decay).append(p)
    # Optional training-only linear probes on the image embedding (category, colour, pattern), dropped
    # at export: an attempt at a denser per-image signal for categories (off by default, see PROBE_WEIGHT).
    n_attr = (len(world.CATEGORIES), len(world.COLOR_NAMES), len(world.PATTERNS))
    probe = torch.nn.Linear(ARCH["projection_dim"], sum(n_attr))
    decay += list(probe.parameters())
    attr_idx = np.array([[world.CATEGORIES.index(p.category), world.COLOR_NAMES.index(p.color),
                          world.PATTERNS.index(p.pattern)] for p in products])
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6, foreach=True)
    opt_emb = torch.optim.SparseAdam([token_emb.weight], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, args.steps // 20)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        t = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    rng = np.random.default_rng(SEED)
    B, NN = args.batch, args.negatives
    log_every = max(1, args.steps // 30)
    t_train = time.time()
    for step in range(args.steps):
        idx = rng.choice(len(products), B, replace=False)
        caps, cattrs = [], []
        for i in idx:
            c, a = world.caption(products[i], rng)
            caps.append(ids_of(c))
            cattrs.append(a)
        for j in range(NN):
            if j % 2 == 0:
                caps.append(ids_of(world.NEGATIVE_TRAIN[int(rng.integers(len(world.NEGATIVE_TRAIN)))]))
            else:
                k = int(rng.integers(1, 5))
                caps.append([mcf.BOS_ID] + [int(x) for x in rng.choice(rand_pool, k)] + [mcf.EOS_ID])
        # two length buckets (short queries, long product texts), so short captions aren't padded to long ones
        order = sorted(range(len(caps)), key=lambda j: len(caps[j]))
        cut = next((n for n, j in enumerate(order) if len(caps[j]) > 12), len(order))
        groups = [g for g in (order[:cut], order[cut:]) if g]
        iattrs = [products[i].attrs for i in idx]
        C = np.array([[compatible(ia, ca) for ca in cattrs] for ia in iattrs], np.float32)  # [B, B]
        C = np.concatenate([C, np.zeros((B, NN), np.float32)], 1)
        C = torch.from_numpy(C)
        for o in (opt, opt_emb):
            for g in o.param_groups:
                g["lr"] = lr_at(step)
        ie = F.normalize(vis_tower(px_all[idx]), dim=-1)
        parts = []
        for g in groups:
            ids, mask = pad_ids([caps[j] for j in g])
            parts.append(txt_tower(torch.from_numpy(ids), torch.from_numpy(mask)))
        te = torch.empty(len(caps), ARCH["projection_dim"])
        te = te.index_copy(0, torch.tensor([j for g in groups for j in g]), torch.cat(parts))
        te = F.normalize(te, dim=-1)
        sims = ie @ te.T  # [B, B+NN]
        scale = model.logit_scale.exp().clamp(max=100)
        logits = sims * scale
        ti = C / C.sum(1, keepdim=True)
        loss_i2t = -(ti * F.log_softmax(logits, 1)).sum(1).mean()
        Ct = C[:, :B]
        tt = Ct / Ct.sum(0, keepdim=True)
        loss_t2i = -(tt * F.log_softmax(logits[:, :B], 0)).sum(0).mean()
        loss_neg = F.relu(sims[:, B:] - NEG_MARGIN).pow(2).mean() * 10
        pl = probe(ie) * 10
        tgt = torch.from_numpy(attr_idx[idx])
        loss_probe = sum(F.cross_entropy(part, tgt[:, a]) for a, part in enumerate(pl.split(n_attr, 1))) / 3
        loss = (loss_i2t + loss_t2i) / 2 + loss_neg + args.probe_weight * loss_probe
        opt.zero_grad(set_to_none=True)
        opt_emb.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p is not token_emb.weight]
                                       + list(vis_tower.parameters()), 1.0)
        opt.step()
        opt_emb.step()
        if step % log_every == 0 or step == args.steps - 1:
            with torch.no_grad():
                pos = (sims[:, :B] * Ct).sum() / Ct.sum()
                neg = (sims[:, :B] * (1 - Ct)).sum() / (1 - Ct).sum()
                acc = (sims[:, :B].argmax(1).numpy() == np.arange(B)).mean()
            el = time.time() - t_train
            print(f"step {step:5d}  loss {loss.item():.3f} (neg {loss_neg.item():.3f} probe {loss_probe.item():.3f})  cos pos {pos:.3f} "
                  f"neg {neg:.3f} ood {sims[:, B:].mean():.3f}  scale {scale.item():.1f}  "
                  f"{el:.0f}s ({(step + 1) / el:.2f} step/s)", flush=True)
    train_s = time.time() - t_train

    # export: an eager-attention copy (what the exporter traces), token embedding stored int8 per row
    emodel, cfg = new_model("eager")
    token_emb.sparse = False
    emodel.load_state_dict(model.state_dict())
    emodel.eval()
    with torch.no_grad():
        tab = emodel.text_model.embeddings.token_embedding.weight
        q, s = mcf.int8_per_row(tab.numpy())
        tab.copy_(torch.from_numpy(q.astype(np.float32) * s[:, None]))
    _, text = mcf.make_wrappers(emodel)
    vision = vis_tower.eval()
    vpath, tpath = mcf.export_onnx(vision, text, out, "per_row", image_size=world.SIZE,
                                   producer="vitrine scripts/toyworld/train.py")
    mcf.write_preprocessor_config(out, image_size=world.SIZE)
    rep = mcf.verify_export(vision, text, vpath, tpath, tok_path, image_size=world.SIZE,
                           distinct=False)
    print("export check:", json.dumps(rep))
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["CLIPModel"]
    cfg_dict.get("text_config", {}).pop("_attn_implementation_autoset", None)
    # The exported image tower is the CNN, not the ViT CLIPConfig describes (transformers cannot
    # load this vision tower; Vitrine runs the ONNX graphs only).
    cfg_dict["vision_config"] = {"vitrine_tower": "cnn", "conv_widths": list(ARCH["conv_widths"]),
                                 "image_size": world.SIZE, "projection_dim": ARCH["projection_dim"]}
    (out / "config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True, default=str) + "\n")
    meta_path = out / "vitrine-model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update(name=NAME, dim=cfg.projection_dim, max_text_len=mcf.MAX_TEXT_LEN)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    info = {"seed": SEED, "n_train": args.n_train, "steps": args.steps, "batch": args.batch,
            "negatives": args.negatives, "lr": args.lr, "conv_widths": list(ARCH["conv_widths"]), "probe_weight": args.probe_weight, "threads": args.threads, "render_s": round(t_render, 1),
            "train_s": round(train_s, 1), "total_s": round(time.time() - t0, 1),
            "parameters": sum(p.numel() for n, p in emodel.named_parameters()
                              if not n.startswith(("vision_model.", "visual_projection.")))
            + sum(p.numel() for p in vis_tower.parameters())}
    print("training:", json.dumps(info))
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
