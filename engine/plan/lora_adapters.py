"""A LoRA student's adapters, torch-free: the layers they may target (`student.lora.target_modules`), and
what the adapter kept apart (`student.lora.zip`) applies to.

The targets, by model type: the linear layers of a causal language model's decoder layer, as module paths
under it. Not the embeddings nor the LM head: the token-level loss reads the head's weight itself, a chunk of
tokens at a time, so an adapter there would never be used. A target names the end of module names, as peft
matches them: `q_proj` and `self_attn.q_proj` both adapt every decoder layer's `self_attn.q_proj`."""

# What the adapter applies to, by the student's start: a copy of the teacher, or a student derived from it.
ADAPTER_BASES = {
    "teacher": "the teacher itself: the student started as a copy of it (student.derive depth 1, width 1), "
    "so peft's PeftModel.from_pretrained(teacher, adapter) is the student",
    "derived": "the derived student's initial weights (the teacher's layers, cut as student.derive says), "
    "which no artifact holds: student.hf.zip is that student with the adapter merged in",
}

_LLAMA_LIKE = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
DECODER_LINEAR_LAYERS = {
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "phi3": ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"),
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
}


def targets_a_layer(target: str, model_type: str) -> bool:
    """Whether the target's module path ends as one of the model type's decoder linear layers does (or the
    layer's as the target's: `layers.0.self_attn.q_proj`)."""
    parts = target.split(".")
    for layer in DECODER_LINEAR_LAYERS[model_type]:
        layer_parts = layer.split(".")
        shared = min(len(parts), len(layer_parts))
        if parts[-shared:] == layer_parts[-shared:]:
            return True
    return False
