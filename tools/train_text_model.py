"""Train the bundled text classifier on generated sentences and write it as a Hugging Face directory + card.

    nice -n 19 python tools/train_text_model.py --out libragrad_fx/text/weights

A small BertForSequenceClassification (2 layers, hidden 64, 4 heads; GELU, LayerNorm, softmax attention and
a tanh pooler, i.e. every rule family but gating) over a word-level tokenizer of the generator's vocabulary
(``tokenizers``' WordLevel, saved beside the model, so the folder loads with ``AutoTokenizer``). Every step
draws fresh sentences ``generate(batch, seed=TRAIN_SEED * 10**6 + step)``; 15% of the words are replaced by
[MASK] (labels unchanged), so the benchmark's deletion token is in distribution and a sentence whose evidence
is masked is read as uncertain. Held-out accuracy is measured on ``generate(n, seed=HELDOUT_SEED)``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libragrad_fx.text.data import HELDOUT_SEED, LABELS, SPECIAL, TRAIN_SEED, VOCAB, generate  # noqa: E402


def tokenizer():
    """A word-level tokenizer of the generator's vocabulary, [CLS] ... [SEP] around each text."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def build(hidden: int, layers: int, heads: int, dropout: float):
    import transformers

    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=32, type_vocab_size=1, pad_token_id=0,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)})
    return transformers.BertForSequenceClassification(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="libragrad_fx/text/weights")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mask-rate", type=float, default=0.15)
    parser.add_argument("--dropout", type=float, default=0.0, help="hidden and attention dropout (default 0: "
                        "every step sees new sentences)")
    parser.add_argument("--eval-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    tok = tokenizer()
    model = build(args.hidden, args.layers, args.heads, args.dropout).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    mask_id, special = tok.mask_token_id, [tok.convert_tokens_to_ids(t) for t in SPECIAL]
    start = time.perf_counter()
    for step in range(args.steps):
        for group in opt.param_groups:  # linear warmup, linear decay
            group["lr"] = args.lr * min(1.0, (step + 1) / 50) * (1 - step / args.steps)
        batch = generate(args.batch, seed=TRAIN_SEED * 10**6 + step)
        enc = tok(batch.texts, padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        drop = (torch.rand(ids.shape) < args.mask_rate) & ~torch.isin(ids, torch.tensor(special))
        ids = ids.masked_fill(drop, mask_id)
        logits = model(input_ids=ids, attention_mask=enc["attention_mask"]).logits
        loss = F.cross_entropy(logits, torch.tensor(batch.labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    model.eval()

    out = Path(args.out)
    folder = out / "classifier"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # the name transformers 4.x and 5.x both load
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    from libragrad_fx.text.loading import load
    from libragrad_fx.text.model import accuracy

    loaded = load(folder)  # measured on the files as shipped
    acc = accuracy(loaded, generate(args.eval_n, seed=HELDOUT_SEED))
    card = {"name": "classifier", "class": "transformers.BertForSequenceClassification", "labels": list(LABELS),
            "params": sum(p.numel() for p in model.parameters()),
            "command": "python tools/train_text_model.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "recipe": {k: v for k, v in vars(args).items() if k != "out"},
            "train_seconds": round(seconds, 1), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "heldout": {"n": args.eval_n, "seed": HELDOUT_SEED, "accuracy": round(acc, 4)},
            "deletion_token": "[MASK]", "evidence": "the keyword, and its negator when negated (data.py)"}
    (out / "classifier.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"held-out accuracy {acc:.4f} ({args.eval_n} sentences); trained in {seconds:.0f} s; wrote {folder}")


if __name__ == "__main__":
    main()
