"""What a `transformers` model reads, from the files of its `save_pretrained` folder: how many tokens it can
place (text, causal language models), the image size and normalisation it was trained with (images).
Torch-free: the API makes an `hf` teacher's spec from what the upload check read, before any worker loads
the model."""

from typing import Any

from engine.plan.hf_models import check_hf_config
from engine.plan.specs import HFSpec

# RoBERTa and its kin number positions from padding_idx + 1, so that many of their embeddings never serve.
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm")
DEFAULT_TEXT_LENGTH = 128  # tokens: most classification text is short, and attention's cost grows squared
# What transformers' image processors use when the preprocessor config says nothing.
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_IMAGE_SIZE = 224


def folder_spec(
    config: dict[str, Any],
    *,
    parameters: int | None = None,
    preprocessor: dict[str, Any] | None = None,
    tokenizer_config: dict[str, Any] | None = None,
) -> HFSpec:
    """The spec of the model a `save_pretrained` folder holds: its config, and for text and causal language
    models the most tokens it reads (its `max_length`), for images the inputs its preprocessor makes. A
    classifier's classes are its labels, a causal language model's its vocabulary (`vocab_size`)."""
    task = check_hf_config(config)
    if task == "image":
        inputs = image_inputs(config, preprocessor or {})
    else:
        inputs = {"max_length": token_capacity(config, tokenizer_config)}
    if task != "causal-lm":
        inputs["num_classes"] = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    return HFSpec(config=config, parameters=parameters, **inputs)


def position_key(config: dict[str, Any]) -> str:
    """The config key of the positions the model embeds (GPT-2 calls them `n_positions`)."""
    gpt2_style = "n_positions" in config and "max_position_embeddings" not in config
    return "n_positions" if gpt2_style else "max_position_embeddings"


def position_embeddings(config: dict[str, Any]) -> int | None:
    """The positions the model embeds, as its config gives them."""
    return config.get(position_key(config))


def token_capacity(config: dict[str, Any], tokenizer_config: dict[str, Any] | None = None) -> int:
    """The most tokens the model places: its position embeddings (less RoBERTa's offset), or what its
    tokenizer says where that is less."""
    capacity = position_embeddings(config) or 512
    if config["model_type"] in POSITIONS_AFTER_PADDING:
        capacity -= config.get("pad_token_id", 1) + 1
    tokenizer_limit = (tokenizer_config or {}).get("model_max_length")
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < capacity:
        capacity = tokenizer_limit
    return max(1, min(capacity, 8192))


def image_inputs(config: dict[str, Any], preprocessor: dict[str, Any]) -> dict[str, Any]:
    """`input_shape`, `image_mean` and `image_std` as the model's image processor prepares its images."""
    channels = config.get("num_channels", 3)
    height, width = _image_size(config, preprocessor)
    mean = preprocessor.get("image_mean", IMAGENET_MEAN)
    std = preprocessor.get("image_std", IMAGENET_STD)
    if not preprocessor.get("do_normalize", True):
        mean, std = [0.0], [1.0]
    return {"input_shape": [channels, height, width], "image_mean": mean, "image_std": std}


def _image_size(config: dict[str, Any], preprocessor: dict[str, Any]) -> tuple[int, int]:
    """The processor's crop, else its resize, else the config's `image_size`."""
    for key in ("crop_size", "size"):
        size = preprocessor.get(key)
        if isinstance(size, int):
            return size, size
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return size["height"], size["width"]
            if "shortest_edge" in size:
                return size["shortest_edge"], size["shortest_edge"]
    size = config.get("image_size", DEFAULT_IMAGE_SIZE)
    return (size, size) if isinstance(size, int) else tuple(size[:2])
