"""Tiny Hugging Face tokenizers, trained in the test and saved as a `save_pretrained` folder, the way a
teacher's folder holds its tokenizer: a BERT-style WordPiece one ([PAD] is id 0) and a RoBERTa-style one
(<pad> is id 1)."""

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song",
    "what a good film",
    "what a dull film",
]


def bert_tokenizer_folder(directory: Path) -> Path:
    """WordPiece with [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3: `[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(
        SENTENCES, trainers.WordPieceTrainer(vocab_size=80, special_tokens=specials)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    return _saved(wrapped, directory)


def roberta_tokenizer_folder(directory: Path) -> Path:
    """Word-level with <s> 0, <pad> 1, </s> 2, <unk> 3: `<s> a </s>`, pairs `<s> a </s></s> b </s>`."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    return _saved(wrapped, directory)


def _saved(tokenizer: PreTrainedTokenizerFast, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return directory


WORDS = sorted({word for sentence in SENTENCES for word in sentence.split()} - {"dog"})
LABELS = ["plain", "dog"]  # whether "dog" is among the words


def dog_texts(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts of 3 to 8 known words, half of them with "dog" among them, and their label names."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        if index % 2:
            words[rng.randrange(len(words))] = "dog"
        texts.append(" ".join(words))
        labels.append(LABELS[index % 2])
    return texts, labels


def fine_tuned_bert_folder(directory: Path, texts: list[str], labels: list[str]) -> Path:
    """A 2-layer BERT classifier fine-tuned on the texts, saved as `save_pretrained` saves it, with its
    tokenizer: a folder as a user uploads it."""
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_folder(directory))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    targets = torch.tensor([LABELS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(60):
        optimizer.zero_grad()
        model(**batch, labels=targets).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory)
    return directory
