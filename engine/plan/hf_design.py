"""Students of a `transformers` teacher (`HFSpec`): designed from it (`derive_hf_spec`, DistilBERT-style for
classifiers, Minitron-style for causal language models: fewer and narrower layers of the same model type),
or given as a config (`student_from_config`), and what keeps a student from learning from a teacher
(`pairing_problems`). Pure config arithmetic, without torch or transformers, so the API shows and checks the
student when the job is submitted.

How each model type gets smaller (the config keys it changes; a key the teacher's config lacks is an error,
as `save_pretrained` writes them all):

- encoders of identical layers (BERT, RoBERTa, DeBERTa, ELECTRA, ModernBERT, ..., DistilBERT, ALBERT; ViT,
  DeiT, BEiT, DINOv2): `depth` of the layers (`num_hidden_layers`, `n_layers`); the width (`hidden_size`,
  `dim`) narrowed to a multiple of the heads, whose count stays, and the feed-forward width with it; sizes
  tied to the width (DeBERTa's pooler, ELECTRA's embeddings when as wide) follow it, other sizes scale.
- staged convolutional networks (ResNet, ConvNeXt) and Swin: `depth` of each stage's blocks (`depths`, at
  least one), `width` of each stage's channels (Swin: `embed_dim`, a multiple that keeps every stage's
  heads whole).
- MobileNet V1 and V2: their layer count is fixed by the architecture, so only `width` applies, as their
  channel multiplier (`depth_multiplier`, which despite its name scales the channels); `depth` must be 1.
- causal language models (Llama, Mistral, Qwen2, Qwen3, Phi-3, GPT-2), Minitron-style (Muralidharan et al.
  2024): `depth` of the decoder layers (`num_hidden_layers`, `n_layer`); `width` of the key-value heads
  (`num_key_value_heads`), the query heads with them (each group of queries sharing a key-value head stays
  whole), of the feed-forward width (`intermediate_size`, `n_inner`) and of the hidden size (`hidden_size`,
  `n_embd`). The width of a head (`head_dim`) stays, so where a model ties its hidden size to its heads
  (Phi-3, GPT-2: hidden = heads x head_dim) the hidden size follows the heads; elsewhere it scales on its
  own and the student's config gives `head_dim`. The vocabulary, positions and rotary embedding stay the
  teacher's. `engine.models.hf.teacher_init` starts such a student from the teacher's evenly spread layers,
  first and last included, each cut to its leading heads, neurons and hidden channels.
- the others (MobileBERT, BiT, RegNet, EfficientNet, MobileViT) tie their sizes together in ways a fraction
  does not keep: give the student as a config instead.
"""

import math
from dataclasses import dataclass
from typing import Any

from engine.plan.errors import JobFailed
from engine.plan.hf_inputs import position_embeddings, position_key
from engine.plan.hf_models import HFTask, check_hf_config
from engine.plan.scaling import layer_selection, scaled, spread_selection
from engine.plan.specs import HFSpec

DERIVE_FIELD = "student.derive"


@dataclass(frozen=True)
class EncoderKeys:
    """The config keys of an encoder of identical layers."""

    layers: str = "num_hidden_layers"
    width: str = "hidden_size"
    heads: str = "num_attention_heads"
    feed_forward: str | None = "intermediate_size"  # None: a ratio of the width (DINOv2's mlp_ratio)
    width_tied: tuple[str, ...] = ()  # equal to the width in the teacher: stay equal, else scale
    per_layer: tuple[str, ...] = ()  # lists of one entry per layer


@dataclass(frozen=True)
class StageKeys:
    """The config keys of a network of stages of blocks."""

    depths: str = "depths"
    widths: str | None = "hidden_sizes"  # None: Swin, whose widths double from embed_dim
    stem: str | None = None


BERT_LIKE = EncoderKeys()
ENCODERS = {
    "albert": EncoderKeys(width_tied=("embedding_size",)),
    "bert": BERT_LIKE,
    "camembert": BERT_LIKE,
    "deberta": EncoderKeys(width_tied=("pooler_hidden_size",)),
    "deberta-v2": EncoderKeys(width_tied=("pooler_hidden_size", "embedding_size")),
    "distilbert": EncoderKeys(layers="n_layers", width="dim", heads="n_heads", feed_forward="hidden_dim"),
    "electra": EncoderKeys(width_tied=("embedding_size",)),
    "ernie": BERT_LIKE,
    "megatron-bert": BERT_LIKE,
    "modernbert": EncoderKeys(per_layer=("layer_types",)),
    "mpnet": BERT_LIKE,
    "roberta": BERT_LIKE,
    "roberta-prelayernorm": BERT_LIKE,
    "xlm-roberta": BERT_LIKE,
    "beit": BERT_LIKE,
    "deit": EncoderKeys(width_tied=("pooler_output_size",)),
    "dinov2": EncoderKeys(feed_forward=None),
    "vit": EncoderKeys(width_tied=("pooler_output_size",)),
}
STAGED = {
    "resnet": StageKeys(stem="embedding_size"),
    "convnext": StageKeys(),
    "convnextv2": StageKeys(),
    "swin": StageKeys(widths=None),
}
CHANNEL_MULTIPLIERS = {"mobilenet_v1": "depth_multiplier", "mobilenet_v2": "depth_multiplier"}


@dataclass(frozen=True)
class DecoderKeys:
    """The config keys of a causal language model's decoder of identical layers."""

    layers: str = "num_hidden_layers"
    width: str = "hidden_size"
    heads: str = "num_attention_heads"
    kv_heads: str | None = "num_key_value_heads"  # None: one key-value head per query head
    feed_forward: str = "intermediate_size"
    feed_forward_ratio: int | None = None  # the feed-forward width per hidden unit where the config says null
    head_dim: str | None = "head_dim"  # None: the width over the heads
    per_layer: tuple[str, ...] = ("layer_types",)  # lists of one entry per layer


LLAMA_LIKE = DecoderKeys()
DECODERS = {
    "gpt2": DecoderKeys(
        layers="n_layer",
        width="n_embd",
        heads="n_head",
        kv_heads=None,
        feed_forward="n_inner",
        feed_forward_ratio=4,
        head_dim=None,
    ),
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "phi3": DecoderKeys(head_dim=None),
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
}

# Text models that number positions from pad_token_id + 1, so that max_length tokens need that many more.
POSITIONS_AFTER_PADDING = ("camembert", "mpnet", "roberta", "roberta-prelayernorm", "xlm-roberta")
# Image models whose position embeddings are made for config.image_size, so that no other size runs.
FIXED_IMAGE_SIZE = ("beit", "deit", "vit")
# The token ids a text student reads are the teacher tokenizer's, and so are these; a causal language model's
# also the ids it begins and ends a text with.
TOKENIZER_KEYS = ("vocab_size", "pad_token_id", "sep_token_id")
LM_TOKENIZER_KEYS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")
LABEL_KEYS = ("num_labels", "id2label", "label2id")
# Fields of the spec rather than the model that a student's config may set: they leave the config.
SPEC_KEYS = ("max_length", "image_mean", "image_std")


def derive_hf_spec(teacher: HFSpec, depth: float, width: float) -> HFSpec:
    """The teacher's model type with `depth` of its layers and `width` of its layer sizes (see the module
    docstring); labels and inputs are the teacher's. Raises JobFailed (`derive_unsupported`) for a model
    type this cannot shrink or a config that lacks a size it changes."""
    config, model_type = teacher.config, teacher.model_type
    if model_type in ENCODERS:
        changes = _derive_encoder(config, ENCODERS[model_type], depth, width)
    elif model_type in STAGED:
        changes = _derive_staged(config, STAGED[model_type], depth, width)
    elif model_type in CHANNEL_MULTIPLIERS:
        changes = _derive_multiplier(config, CHANNEL_MULTIPLIERS[model_type], model_type, depth, width)
    elif model_type in DECODERS:
        changes = _derive_decoder(config, DECODERS[model_type], depth, width)
    else:
        raise JobFailed(
            "derive_unsupported",
            f"student.derive cannot design a student of a {model_type} teacher (its sizes are tied together "
            "in ways a fraction does not keep): give student.architecture, a config of the size you want.",
            DERIVE_FIELD,
        )
    return _with_config(teacher, config | changes)


def _derive_encoder(config: dict, keys: EncoderKeys, depth: float, width: float) -> dict:
    layers, hidden, heads = (_size(config, key) for key in (keys.layers, keys.width, keys.heads))
    student_layers = scaled(layers, depth)
    student_hidden = scaled(hidden // heads, width) * heads
    changes: dict[str, Any] = {keys.layers: student_layers, keys.width: student_hidden}
    if keys.feed_forward is not None:
        changes[keys.feed_forward] = scaled(_size(config, keys.feed_forward), width)
    for key in keys.width_tied:
        if key in config:
            changes[key] = student_hidden if config[key] == hidden else scaled(_size(config, key), width)
    kept = layer_selection(layers, student_layers)
    for key in keys.per_layer:
        if isinstance(config.get(key), list) and len(config[key]) == layers:
            changes[key] = [config[key][index] for index in kept]
    return changes


def _derive_decoder(config: dict, keys: DecoderKeys, depth: float, width: float) -> dict:
    layers = _size(config, keys.layers)
    changes = {keys.layers: scaled(layers, depth)} | _decoder_width(config, keys, width)
    kept = spread_selection(layers, changes[keys.layers])
    for key in keys.per_layer:
        if isinstance(config.get(key), list) and len(config[key]) == layers:
            changes[key] = [config[key][index] for index in kept]
    return changes


def _decoder_width(config: dict, keys: DecoderKeys, width: float) -> dict:
    """Fewer key-value heads, each with its group of query heads; heads as wide; a narrower feed-forward
    and hidden size (the heads' where the model ties them)."""
    hidden, heads = _size(config, keys.width), _size(config, keys.heads)
    kv_heads = _size(config, keys.kv_heads) if keys.kv_heads and config.get(keys.kv_heads) else heads
    head_dim = (
        _size(config, keys.head_dim) if keys.head_dim and config.get(keys.head_dim) else hidden // heads
    )
    if heads % kv_heads:
        raise JobFailed(
            "derive_unsupported",
            f"the teacher's {heads} query heads ({keys.heads}) are no whole groups of its {kv_heads} "
            f"key-value heads ({keys.kv_heads}), which no {config['model_type']} has: check its config.json.",
            DERIVE_FIELD,
        )
    student_kv_heads = scaled(kv_heads, width)
    student_heads = student_kv_heads * (heads // kv_heads)
    feed_forward = config.get(keys.feed_forward)
    if feed_forward is None and keys.feed_forward_ratio is not None:
        feed_forward = keys.feed_forward_ratio * hidden
    changes: dict[str, Any] = {
        keys.heads: student_heads,
        keys.feed_forward: scaled(
            _size(config | {keys.feed_forward: feed_forward}, keys.feed_forward), width
        ),
    }
    if keys.kv_heads is not None:
        changes[keys.kv_heads] = student_kv_heads
    if keys.head_dim is None:
        return changes | {keys.width: student_heads * head_dim}
    return changes | {keys.width: scaled(hidden, width), keys.head_dim: head_dim}


def _derive_staged(config: dict, keys: StageKeys, depth: float, width: float) -> dict:
    changes: dict[str, Any] = {keys.depths: [scaled(blocks, depth) for blocks in _sizes(config, keys.depths)]}
    if keys.widths is not None:
        changes[keys.widths] = [scaled(channels, width) for channels in _sizes(config, keys.widths)]
    else:
        changes |= _swin_width(config, width)
    if keys.stem is not None:
        changes[keys.stem] = scaled(_size(config, keys.stem), width)
    return changes


def _swin_width(config: dict, width: float) -> dict:
    """Stage i is embed_dim * 2^i wide with num_heads[i] heads: embed_dim stays a multiple that keeps
    each stage's heads of one width."""
    heads = _sizes(config, "num_heads")
    multiple = math.lcm(*(count // math.gcd(count, 2**stage) for stage, count in enumerate(heads)))
    embed_dim = scaled(_size(config, "embed_dim") // multiple, width) * multiple
    changes = {"embed_dim": embed_dim}
    if "hidden_size" in config:  # the last stage's width, which the config repeats
        changes["hidden_size"] = embed_dim * 2 ** (len(heads) - 1)
    return changes


def _derive_multiplier(config: dict, key: str, model_type: str, depth: float, width: float) -> dict:
    if depth != 1:
        raise JobFailed(
            "derive_unsupported",
            f"a {model_type} has as many layers as its architecture fixes, so student.derive.depth must be "
            f"1; student.derive.width scales its channels ({key}).",
            f"{DERIVE_FIELD}.depth",
        )
    multiplier = config.get(key, 1.0)  # both MobileNets' default
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
        raise _missing(key, config)
    return {key: multiplier * width}


def _size(config: dict, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _missing(key, config)
    return value


def _sizes(config: dict, key: str) -> list[int]:
    values = config.get(key)
    if not isinstance(values, list) or not values:
        raise _missing(key, config)
    return [_size({key: value}, key) for value in values]


def _missing(key: str, config: dict) -> JobFailed:
    return JobFailed(
        "derive_unsupported",
        f"student.derive shrinks the teacher's {key}, which its config ({config.get('model_type')}) does not "
        f"give as a size: add {key} to the teacher's config.json (save_pretrained writes it), or give "
        "student.architecture.",
        DERIVE_FIELD,
    )


def _with_config(spec: HFSpec, config: dict, **fields) -> HFSpec:
    # The sizes the service measured were the teacher's; it measures the student's anew.
    return HFSpec.model_validate(
        spec.model_dump() | fields | {"config": config, "parameters": None, "activation_floats": None}
    )


def student_from_config(teacher: HFSpec, config: dict) -> HFSpec:
    """A student given as a `transformers` config (`model_type` and the fields it sets) for `teacher`.

    Its labels are always the teacher's. It reads the teacher's inputs: where the config does not say
    otherwise, a text student takes the teacher tokenizer's `vocab_size`, `pad_token_id` and `sep_token_id`
    and the teacher's `max_length`, a causal language model the teacher tokenizer's `vocab_size`,
    `bos_token_id`, `eos_token_id` and `pad_token_id` and the teacher's `max_length`; an image student the
    teacher's `input_shape` (`num_channels` and `image_size` in its config), `image_mean` and `image_std`.
    The config's `max_length`, `image_mean` and `image_std` are the spec's fields. Check the result with
    `pairing_problems`.
    Raises ValueError for a config that is no model the service builds or of another task than the teacher.
    """
    task = check_hf_config(config)
    if task != teacher.task:
        raise ValueError(_task_problem(teacher, config["model_type"], task))
    student = {key: value for key, value in config.items() if key not in (*LABEL_KEYS, *SPEC_KEYS)}
    fields = {key: config[key] for key in SPEC_KEYS if key in config}
    if teacher.task == "causal-lm":  # whose classes are its vocabulary
        inherited = {key: teacher.config[key] for key in LM_TOKENIZER_KEYS if key in teacher.config}
        return _with_config(teacher, inherited | student, **fields, num_classes=None)
    student |= {key: teacher.config[key] for key in LABEL_KEYS if key in teacher.config}
    fields["num_classes"] = teacher.num_classes
    if teacher.task == "text":
        inherited = {key: teacher.config[key] for key in TOKENIZER_KEYS if key in teacher.config}
    else:
        channels, height, width = teacher.input_shape
        inherited = {"num_channels": channels, "image_size": height if height == width else [height, width]}
        fields["input_shape"] = [student.get("num_channels", channels), *_image_size(student, teacher)]
    return _with_config(teacher, inherited | student, **fields)


def _image_size(config: dict, spec: HFSpec) -> list[int]:
    """The config's image_size as [height, width]; the spec's where the config gives none."""
    size = config.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool):
        return [size, size]
    if isinstance(size, list) and len(size) == 2:
        return list(size)
    return list(spec.input_shape[1:])


def pairing_problems(teacher: HFSpec, student: HFSpec) -> list[str]:
    """What keeps `student` from learning from `teacher` on the same inputs, each naming both sides and what
    would work; empty when they pair."""
    if student.task != teacher.task:
        return [_task_problem(teacher, student.model_type, student.task)]
    if teacher.task == "causal-lm":
        return _vocabulary_problems(teacher, student) + _length_problems(teacher, student)
    problems = []
    if student.num_classes != teacher.num_classes:
        problems.append(
            f"the teacher has {teacher.num_classes} classes and the student {student.num_classes}: the "
            f"student learns the teacher's labels, so give it num_classes {teacher.num_classes}."
        )
    if teacher.task == "text":
        problems += _text_problems(teacher, student)
    else:
        problems += _image_problems(teacher, student)
    return problems


TASKS_IN_WORDS = {
    "text": "a text classifier",
    "image": "an image classifier",
    "causal-lm": "a causal language model",
}


def _task_problem(teacher: HFSpec, student_type: str, student_task: HFTask) -> str:
    return (
        f"the teacher ({teacher.model_type}) is {TASKS_IN_WORDS[teacher.task]} and the student "
        f"({student_type}) {TASKS_IN_WORDS[student_task]}: a student learns its teacher's outputs on the "
        f"same inputs, so choose a model_type of {TASKS_IN_WORDS[teacher.task]} for the student."
    )


def _vocabulary_problems(teacher: HFSpec, student: HFSpec) -> list[str]:
    """A causal language model learns the teacher's next-token distribution over the same token ids."""
    if student.num_classes == teacher.num_classes:
        return []
    return [
        f"the teacher's vocabulary has {teacher.num_classes:,} tokens and the student's "
        f"{student.num_classes:,}: a student learns the teacher's next-token distribution over the same "
        f"token ids, so it must share the teacher's tokenizer: give it vocab_size {teacher.num_classes} (or "
        "leave vocab_size out)."
    ]


def _text_problems(teacher: HFSpec, student: HFSpec) -> list[str]:
    problems = []
    teacher_vocab, student_vocab = teacher.config.get("vocab_size"), student.config.get("vocab_size")
    if _known(teacher_vocab, student_vocab) and student_vocab < teacher_vocab:
        problems.append(
            f"the student's vocab_size {student_vocab} is smaller than the teacher tokenizer's "
            f"{teacher_vocab}: it reads the teacher's token ids, so give it vocab_size {teacher_vocab} "
            "(or more)."
        )
    # Padding and separator ids need no check: the engine gives every text model the tokenizer's.
    return problems + _length_problems(teacher, student)


def _length_problems(teacher: HFSpec, student: HFSpec) -> list[str]:
    """Both read the same token ids, as many as the student's `max_length`."""
    problems = []
    if student.max_length > teacher.max_length:
        problems.append(
            f"the student reads {student.max_length} tokens and the teacher places at most "
            f"{teacher.max_length}: both read the same token ids, so give dataset.max_length "
            f"{teacher.max_length} or less."
        )
    positions, needed = position_embeddings(student.config), positions_needed(student)
    if _known(positions) and positions < needed:
        key = position_key(student.config)
        problems.append(
            f"the student ({student.model_type}) has {positions} {key} and its max_length "
            f"{student.max_length} needs {needed}: give the student {key} {needed}, or a smaller "
            "dataset.max_length."
        )
    return problems


def positions_needed(spec: HFSpec) -> int:
    """The position embeddings a text model needs for `max_length` tokens."""
    pad = spec.config.get("pad_token_id")
    offset = pad + 1 if spec.model_type in POSITIONS_AFTER_PADDING and _known(pad) else 0
    return spec.max_length + offset


def _image_problems(teacher: HFSpec, student: HFSpec) -> list[str]:
    problems = []
    if student.input_shape != teacher.input_shape:
        problems.append(
            f"the student takes images of {student.input_shape} and the teacher {teacher.input_shape} "
            "([channels, height, width]): both read the same images, so give the student the teacher's "
            "(num_channels and image_size in its config)."
        )
    channels = student.config.get("num_channels")
    if _known(channels) and channels != student.input_shape[0]:
        problems.append(
            f"the student's config has num_channels {channels} but its input_shape {student.input_shape} "
            f"{student.input_shape[0]} channels (the teacher's images have {teacher.input_shape[0]}): make "
            "them agree."
        )
    if (
        student.model_type in FIXED_IMAGE_SIZE
        and _image_size(student.config, student) != student.input_shape[1:]
    ):
        problems.append(
            f"a {student.model_type} student runs on images of its config's image_size "
            f"{student.config['image_size']}, not its input_shape {student.input_shape} (the teacher's "
            f"are {teacher.input_shape}): give it image_size {teacher.input_shape[1]}."
        )
    return problems


def _known(*values: object) -> bool:
    return all(isinstance(value, int) and not isinstance(value, bool) for value in values)
