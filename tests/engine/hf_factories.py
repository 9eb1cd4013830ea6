"""Tiny `transformers` classifiers of every model type the service builds (a few thousand parameters each),
made from configs: nothing is downloaded."""

import torch

from engine.plan.hf_models import HF_TASKS
from engine.plan.specs import HFSpec

VOCAB = 100
MAX_LENGTH = 12
IMAGE = [3, 8, 8]
NUM_CLASSES = 3
FIRST_WORD = 5  # token ids below are the special tokens of the tiny tokenizers
BERT_SEP = 3

_TEXT = {
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": VOCAB,
    "max_position_embeddings": 20,
    "pad_token_id": 0,
    "initializer_range": 0.5,  # outputs far apart enough for the tests to tell mistakes from rounding
}
_VIT = {
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "image_size": 8,
    "patch_size": 4,
    "initializer_range": 0.5,
}
_STAGES = {"hidden_sizes": [8, 16], "depths": [2, 4]}
CONFIGS = {
    "albert": _TEXT | {"embedding_size": 8},
    "bert": _TEXT | {"sep_token_id": BERT_SEP},
    "camembert": _TEXT,
    "deberta": _TEXT | {"pooler_hidden_size": 16},
    "deberta-v2": _TEXT | {"pooler_hidden_size": 16},
    "distilbert": {
        "dim": 16,
        "n_layers": 4,
        "n_heads": 2,
        "hidden_dim": 32,
        "vocab_size": VOCAB,
        "pad_token_id": 0,
    }
    | {"initializer_range": 0.5},
    "electra": _TEXT | {"embedding_size": 8},
    "ernie": _TEXT,
    "megatron-bert": _TEXT,
    "mobilebert": _TEXT | {"embedding_size": 8, "intra_bottleneck_size": 8, "true_hidden_size": 8},
    "modernbert": _TEXT
    | {
        "bos_token_id": 1,
        "cls_token_id": 1,
        "eos_token_id": 2,
        "sep_token_id": 2,
        "global_attn_every_n_layers": 2,
        "local_attention": 4,
    },
    "mpnet": _TEXT,
    "roberta": _TEXT | {"pad_token_id": 1, "type_vocab_size": 1},
    "roberta-prelayernorm": _TEXT,
    "xlm-roberta": _TEXT,
    "beit": _VIT | {"use_auxiliary_head": False},
    "deit": _VIT,
    "dinov2": _VIT | {"mlp_ratio": 2},
    "vit": _VIT,
    "bit": _STAGES | {"embedding_size": 8, "num_groups": 2, "layer_type": "preactivation"},
    "convnext": _STAGES | {"num_stages": 2, "patch_size": 2},
    "convnextv2": _STAGES | {"num_stages": 2, "patch_size": 2},
    "efficientnet": {"width_coefficient": 0.1, "depth_coefficient": 0.3, "hidden_dim": 128},
    "mobilenet_v1": {"depth_multiplier": 0.1, "min_depth": 4, "initializer_range": 0.5},
    "mobilenet_v2": {
        "depth_multiplier": 0.2,
        "finegrained_output": False,
        "expand_ratio": 2.0,
        "min_depth": 4,
        "depth_divisible_by": 4,
        "initializer_range": 0.5,
    },
    "mobilevit": {
        "hidden_sizes": [8, 8, 8],
        "neck_hidden_sizes": [8, 8, 8, 8, 8, 8, 16],
        "patch_size": 2,
        "num_attention_heads": 2,
    },
    "regnet": _STAGES | {"embedding_size": 8, "groups_width": 4},
    "resnet": _STAGES | {"embedding_size": 8, "layer_type": "basic"},
    "swin": {"patch_size": 2, "embed_dim": 8, "depths": [2, 4], "num_heads": [2, 4], "window_size": 2},
}
# EfficientNet's 3x3 convolutions after five halvings need more than 8 pixels.
IMAGE_SIZES = {"efficientnet": 32}
FAMILIES = ["bert", "roberta", "distilbert", "vit", "resnet", "mobilenet_v2"]


def tiny_spec(model_type: str, **config) -> HFSpec:
    """A spec of the model type's tiny config, with `config` changed; images are [3, 8, 8] (32 for
    EfficientNet) with ImageNet's mean and std."""
    fields = {"model_type": model_type, **CONFIGS[model_type], **config}
    if HF_TASKS[model_type] == "text":
        return HFSpec(config=fields, num_classes=NUM_CLASSES, max_length=MAX_LENGTH)
    size = IMAGE_SIZES.get(model_type, IMAGE[1])
    return HFSpec(
        config={"image_size": size, "num_channels": IMAGE[0], **fields},
        num_classes=NUM_CLASSES,
        input_shape=[IMAGE[0], size, size],
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def tiny_inputs(spec: HFSpec, count: int = 4, seed: int = 0) -> torch.Tensor:
    """Token ids of words, the last few positions padding, or images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    if spec.task == "image":
        return torch.rand((count, *spec.input_shape), generator=generator)
    ids = torch.randint(FIRST_WORD, VOCAB, (count, spec.max_length), generator=generator)
    ids[:, spec.max_length - 3 :] = spec.config["pad_token_id"]
    return ids
