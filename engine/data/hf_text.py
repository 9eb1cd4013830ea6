"""Text for a Hugging Face (`transformers`) model: token ids made by the teacher's own tokenizer, the one
saved in its folder (`save_pretrained`), never fetched from a hub and never running code shipped with it.

Ids are `[N, max_length]` int64, truncated the tokenizer's way (its special tokens, `[CLS] ... [SEP]`,
kept) and padded with its padding id, which the model reads as no token.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from engine.data.arrays import invalid
from engine.data.text import tokenizer_invalid
from engine.plan.errors import JobFailed
from engine.plan.specs import EngineJob, HFSpec, JobFiles


def load_hf_tokenizer(folder: Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `folder`, which must have a padding token and a vocabulary."""
    tokenizer = load_saved_tokenizer(folder)
    if tokenizer.pad_token_id is None:
        raise tokenizer_invalid(
            "the teacher's tokenizer has no padding token, which fills the ids of short texts: set one "
            "(tokenizer.pad_token = ...) and save it again"
        )
    return tokenizer


def load_saved_tokenizer(folder: Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `folder`, which must have a vocabulary."""
    if folder is None or not folder.is_dir():
        raise JobFailed(
            "tokenizer_required",
            "text is tokenized with the teacher's own tokenizer, but the teacher's folder has none: "
            "save the tokenizer with the model (tokenizer.save_pretrained(folder)) and upload the folder",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as error:  # a user's files: transformers raises many kinds (OSError, ValueError, ...)
        raise tokenizer_invalid(
            f"the tokenizer in the teacher's folder could not be loaded (save it with "
            f"tokenizer.save_pretrained(folder)): {error}"
        ) from None
    if len(tokenizer) <= len(tokenizer.all_special_ids):
        # transformers makes an empty tokenizer from a folder with a config.json and no tokenizer files
        raise tokenizer_invalid(
            "the teacher's folder has no tokenizer vocabulary (tokenizer.json, vocab.txt, ...): save the "
            "tokenizer with the model (tokenizer.save_pretrained(folder))"
        )
    return tokenizer


def encode_hf_text(
    tokenizer_folder: Path, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int
) -> np.ndarray:
    """[N, max_length] int64 ids of `texts` (with `pairs`: of each pair), by the folder's tokenizer."""
    return encode_texts(load_hf_tokenizer(tokenizer_folder), texts, pairs, max_length)


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    max_length: int,
    where: Callable[[int], str] = lambda index: f"text {index}",
) -> np.ndarray:
    """[N, max_length] int64 ids, encoded in one batch; `where(index)` names a text that fails."""
    check_room(tokenizer, max_length, paired=pairs is not None)
    options = dict(
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_attention_mask=False,
        return_token_type_ids=False,
        return_tensors="np",
    )
    try:
        encoded = tokenizer(list(texts), None if pairs is None else list(pairs), **options)
        return encoded["input_ids"].astype(np.int64, copy=False)
    except Exception:  # the Rust library raises plain Exception; find the text it failed on
        for index, text in enumerate(texts):
            try:
                tokenizer(text, None if pairs is None else pairs[index], **options)
            except Exception as error:
                raise invalid(f"the tokenizer failed on {where(index)}: {error}") from None
        raise


def check_room(tokenizer: PreTrainedTokenizerBase, max_length: int, paired: bool) -> None:
    """The ids must hold the tokenizer's special tokens and a token of text: transformers would return
    longer ids than asked for rather than cut them."""
    specials = tokenizer.num_special_tokens_to_add(pair=paired)
    if specials + (2 if paired else 1) > max_length:
        raise JobFailed(
            "incompatible_shapes",
            f"the model's max_length is {max_length}, but the tokenizer adds {specials} special tokens to "
            f"each {'pair of texts' if paired else 'text'}, which leaves no room for text: raise max_length",
        )


def with_tokenizer_ids(job: EngineJob, files: JobFiles) -> EngineJob:
    """The job whose transformers text models pad and separate with the ids of the tokenizer their text is
    read with, the first `hf` teacher's: a config's own (BERT's has no `sep_token_id`, a student's config
    from another family another `pad_token_id`) would mask the wrong tokens or lose a pair's segments."""
    if job.teachers[0].format != "hf" or not _reads_text(job.student_architecture):
        return job
    tokenizer = load_hf_tokenizer(files.teachers[0])
    ids = {"pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id}
    ids = {name: value for name, value in ids.items() if value is not None}

    def completed(spec):
        return spec.model_copy(update={"config": spec.config | ids}) if _reads_text(spec) else spec

    teachers = [t.model_copy(update={"architecture": completed(t.architecture)}) for t in job.teachers]
    peers = [completed(peer) for peer in job.distillation.peers]
    return job.model_copy(
        update={
            "teachers": teachers,
            "student_architecture": completed(job.student_architecture),
            "distillation": job.distillation.model_copy(update={"peers": peers}),
        }
    )


def _reads_text(spec) -> bool:
    return isinstance(spec, HFSpec) and spec.task == "text"
