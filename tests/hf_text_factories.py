"""Tiny Hugging Face tokenizers, trained in the test and saved as a `save_pretrained` folder, the way a
teacher's folder holds its tokenizer: a BERT-style WordPiece one ([PAD] is id 0) and a RoBERTa-style one
(<pad> is id 1); BERT teachers fine-tuned on texts with labels, saved with their tokenizer.

The tokenizers' trainer breaks ties in an order of its own, which changes between processes: the WordPiece
vocabulary is built here instead (`wordpiece_vocabulary`), and teachers that must read the same ids share one
saved tokenizer."""

import json
import random
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

WORDPIECE_VOCAB = 80  # the most ids a WordPiece tokenizer here has, on any sentences
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song",
    "what a good film",
    "what a dull film",
]


def bert_tokenizer_folder(directory: Path, sentences: list[str] = SENTENCES) -> Path:
    """WordPiece with [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3: `[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]`;
    its vocabulary learnt from `sentences`."""
    normalizer, pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    tokenizer = Tokenizer(
        models.WordPiece(wordpiece_vocabulary(sentences, normalizer, pre_tokenizer), unk_token="[UNK]")
    )
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    return _saved(wrapped, directory)


def wordpiece_vocabulary(sentences: list[str], normalizer, pre_tokenizer) -> dict[str, int]:
    """The specials, every character of the sentences (alone and as a word's continuation), then their most
    frequent words (ties by the word), up to WORDPIECE_VOCAB ids: the same ids in every process, where the
    trainer breaks frequency ties in an order of its own and teaches the same test other ids each run."""
    words = Counter(
        word
        for sentence in sentences
        for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
    )
    characters = sorted({character for word in words for character in word})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *characters, *(f"##{c}" for c in characters)]
    frequent = sorted((word for word in words if len(word) > 1), key=lambda word: (-words[word], word))
    tokens = (pieces + frequent)[:WORDPIECE_VOCAB]
    assert len(pieces) <= WORDPIECE_VOCAB, "more characters than ids: raise WORDPIECE_VOCAB"
    return {token: index for index, token in enumerate(tokens)}


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


def write_jsonl(path: Path, texts: list[str], labels: list[str]) -> Path:
    """One JSON object a line: its `text` and its `label` (a name)."""
    lines = [json.dumps({"text": text, "label": label}) for text, label in zip(texts, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def fine_tuned_bert_folder(
    directory: Path,
    texts: list[str],
    labels: list[str],
    *,
    hidden_size: int = 32,
    tokenizer: Path | None = None,
    seed: int = 0,
) -> Path:
    """A 2-layer BERT classifier `hidden_size` wide fine-tuned on the texts, saved as `save_pretrained` saves
    it, with its tokenizer (`tokenizer`'s folder's, else a WordPiece one trained here): a folder as a user
    uploads it. Its embeddings hold WORDPIECE_VOCAB ids, so it reads the ids of any tokenizer here."""
    source = tokenizer or bert_tokenizer_folder(directory)
    loaded = AutoTokenizer.from_pretrained(source)
    loaded.save_pretrained(directory)
    config = BertConfig(
        vocab_size=WORDPIECE_VOCAB,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
        id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    batch = loaded(texts, padding=True, return_tensors="pt")
    targets = torch.tensor([LABELS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(60):
        optimizer.zero_grad()
        model(**batch, labels=targets).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory)
    return directory
