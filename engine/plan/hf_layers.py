"""The numbered outputs of a `transformers` model, by model type: `hidden_states.N` and `attentions.N`, as
transformers numbers them when a model is called with `output_hidden_states` and `output_attentions`.

`hidden_states.0` is what enters the first layer (the embeddings' output, after ELECTRA's projection to the
layers' width), `hidden_states.N` layer N-1's output (the last one through the final norm where a pre-norm
model has one); `attentions.N` layer N's attention probabilities [heads, L, L], which exist as tensors only
when the model attends `eager`ly. Feature pairs and TinyBERT name these on `hf` models, whatever the modules
are called. Torch-free: the job rules check TinyBERT's models and layer map with it before any is built.
"""

from dataclasses import dataclass

from engine.plan.hf_design import ENCODERS
from engine.plan.hf_models import HF_TASKS
from engine.plan.specs import HFSpec

HIDDEN_STATES = "hidden_states"
ATTENTIONS = "attentions"


@dataclass(frozen=True)
class HFLayers:
    """Module paths under a model's base model (`bert` in `BertForSequenceClassification`)."""

    layers: str  # the list of layers (blocks, or stages of blocks)
    attention: str | None = None  # under a layer, the module whose output's 2nd element is the probabilities
    attentions_on_request: bool = False  # it returns them only when called with output_attentions=True
    final_norm: str | None = None  # the norm a pre-norm model's last hidden state passes through


_BERT = HFLayers("encoder.layer", "attention.self")
_VIT = HFLayers("layers", "attention")
_STAGES = HFLayers("encoder.stages")
_DECODER = HFLayers("layers", final_norm="norm")  # hidden states only: no TinyBERT between LMs
# Model types whose layers are separate modules that hooks reach. Left out: ALBERT (one layer run again and
# again), and models that number their hidden states otherwise (MobileNet, EfficientNet, MobileViT).
HF_LAYERS = {
    "bert": _BERT,
    "camembert": _BERT,
    "deberta": HFLayers("encoder.layer", "attention.self", attentions_on_request=True),
    "deberta-v2": HFLayers("encoder.layer", "attention.self", attentions_on_request=True),
    "distilbert": HFLayers("transformer.layer", "attention"),
    "electra": _BERT,
    "ernie": _BERT,
    "megatron-bert": HFLayers("encoder.layer", "attention.self", final_norm="encoder.ln"),
    "mobilebert": _BERT,
    "modernbert": HFLayers("layers", "attn", final_norm="final_norm"),
    "mpnet": HFLayers("encoder.layer", "attention.attn", attentions_on_request=True),
    "roberta": _BERT,
    "roberta-prelayernorm": HFLayers("encoder.layer", "attention.self", final_norm="LayerNorm"),
    "xlm-roberta": _BERT,
    "beit": _VIT,
    "deit": _VIT,
    "dinov2": HFLayers("encoder.layer", "attention"),
    "vit": _VIT,
    "bit": _STAGES,
    "convnext": _STAGES,
    "convnextv2": _STAGES,
    "regnet": _STAGES,
    "resnet": _STAGES,
    "swin": HFLayers("encoder.layers"),
    "gpt2": HFLayers("h", final_norm="ln_f"),
    "llama": _DECODER,
    "mistral": _DECODER,
    "phi3": _DECODER,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
}
# Text encoders whose embeddings, layers and attention probabilities TinyBERT reads.
TINYBERT_MODEL_TYPES = tuple(
    model_type
    for model_type, layers in HF_LAYERS.items()
    if layers.attention is not None and HF_TASKS[model_type] == "text"
)


def numbered(kind: str, index: int) -> str:
    """`hidden_states.3`, `attentions.0`."""
    return f"{kind}.{index}"


def parse_numbered(name: str) -> tuple[str, int] | None:
    """(`hidden_states` or `attentions`, N) for such a name; None for a module path."""
    kind, _, index = name.partition(".")
    if kind not in (HIDDEN_STATES, ATTENTIONS) or not index.isdigit():
        return None
    return kind, int(index)


def tinybert_outputs(num_layers: int) -> dict:
    """The numbered outputs TinyBERT compares: `embeddings` (`hidden_states.0`), `hidden` (each layer's
    output) and `attention` (each layer's probabilities)."""
    return {
        "embeddings": numbered(HIDDEN_STATES, 0),
        "hidden": [numbered(HIDDEN_STATES, index + 1) for index in range(num_layers)],
        "attention": [numbered(ATTENTIONS, index) for index in range(num_layers)],
    }


def declared_layers(spec: HFSpec) -> int | None:
    """An encoder's layer count as its config gives it; None where it leaves transformers' default."""
    keys = ENCODERS.get(spec.model_type)
    count = None if keys is None else spec.config.get(keys.layers)
    return count if isinstance(count, int) and not isinstance(count, bool) else None
