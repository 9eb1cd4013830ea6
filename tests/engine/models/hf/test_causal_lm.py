"""Causal language models: built from their config and wrapped (token ids in, final hidden states out, the
LM head beside them), loaded from a save_pretrained folder with tied or own head, measured without memory,
and students derived from a teacher started from its evenly spread layers cut to its leading heads,
neurons and channels."""

import json

import pytest
import torch

from engine.models.hf.loading import load_hf_model
from engine.models.hf.sizing import measure
from engine.models.hf.teacher_init import LAYER_KEYS, initialise_hf_student
from engine.models.registry import build_model, count_parameters
from engine.plan.errors import JobFailed
from engine.plan.hf_design import derive_hf_spec
from engine.plan.hf_inputs import folder_spec
from engine.plan.hf_models import CAUSAL_LM_MODEL_TYPES
from engine.plan.scaling import spread_selection
from tests.engine.models.hf.test_teacher_init import assert_layers_copied
from tests.lm_model_factories import LM_MAX_LENGTH, lm_folder, lm_spec, lm_token_ids


def built(spec, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(spec).eval()


def teacher_and_student(model_type: str, depth: float, width: float, **config):
    teacher_spec = lm_spec(model_type, **config)
    teacher, student = built(teacher_spec), built(derive_hf_spec(teacher_spec, depth, width), seed=1)
    return teacher, student, initialise_hf_student(student, teacher)


@pytest.mark.parametrize("model_type", CAUSAL_LM_MODEL_TYPES)
def test_the_lm_head_of_the_hidden_states_is_the_models_logits(model_type):
    model = built(lm_spec(model_type))
    ids = lm_token_ids()
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0  # the second text ends 4 tokens early: padding
    with torch.no_grad():
        hidden = model(ids, mask)
        logits = model.model(input_ids=ids, attention_mask=mask).logits
    assert hidden.shape == (2, LM_MAX_LENGTH, model.model.config.hidden_size)
    torch.testing.assert_close(model.lm_head()(hidden), logits, rtol=0, atol=1e-6)


def test_a_language_model_trains_through_its_hidden_states_and_head():
    model = built(lm_spec("gpt2")).train()
    ids = lm_token_ids()
    logits = model.lm_head()(model(ids))
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


@pytest.mark.parametrize(("model_type", "tied"), [("llama", False), ("llama", True), ("gpt2", True)])
def test_a_saved_folder_loads_to_the_same_model(model_type, tied, tmp_path):
    folder = lm_folder(tmp_path, model_type, tied=tied)
    spec = folder_spec(json.loads((folder / "config.json").read_text()))
    loaded, source = load_hf_model(folder, spec), built(spec)
    assert not loaded.training and spec.task == "causal-lm"
    ids = lm_token_ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), source(ids))
    assert all(torch.equal(tensor, source.state_dict()[name]) for name, tensor in loaded.state_dict().items())
    embeddings = loaded.model.get_input_embeddings().weight
    assert (loaded.lm_head().weight is embeddings) == tied


def test_weights_without_the_head_the_config_asks_for_are_refused(tmp_path):
    folder = lm_folder(tmp_path, "llama", tied=True)
    config = json.loads((folder / "config.json").read_text()) | {"tie_word_embeddings": False}
    with pytest.raises(JobFailed, match="missing lm_head.weight") as caught:
        load_hf_model(folder, folder_spec(config))
    assert "(llama, a vocabulary of 300)" in caught.value.message
    assert "for the language model" in caught.value.message


@pytest.mark.parametrize("model_type", CAUSAL_LM_MODEL_TYPES)
def test_sizing_counts_the_built_models_parameters(model_type):
    spec = lm_spec(model_type)
    assert measure(spec).parameters == count_parameters(build_model(spec))


def test_activations_leave_out_the_logits_and_grow_with_the_tokens():
    """The chunked loss forms the logits: a sample's activations do not grow with the vocabulary."""
    floats = measure(lm_spec("llama")).activation_floats
    assert measure(lm_spec("llama", vocab_size=30_000)).activation_floats == floats
    assert floats < 30_000 * LM_MAX_LENGTH
    longer = lm_spec("llama").model_copy(update={"max_length": 2 * LM_MAX_LENGTH})
    assert measure(longer).activation_floats > 1.9 * floats


@pytest.mark.parametrize("model_type", CAUSAL_LM_MODEL_TYPES)
def test_a_student_of_the_teachers_depth_and_width_computes_its_logits(model_type):
    teacher, student, summary = teacher_and_student(model_type, depth=1.0, width=1.0)
    assert ", 0 cut to their leading slice, 0 left as initialised" in summary
    ids = lm_token_ids()
    with torch.no_grad():
        assert torch.equal(student.model(ids).logits, teacher.model(ids).logits)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_shallower_student_starts_from_spread_layers_the_first_and_last_among_them(model_type):
    teacher, student, summary = teacher_and_student(model_type, depth=0.5, width=1.0)
    assert "teacher layers 0, 3" in summary and " 0 left as initialised" in summary
    # Embeddings, final norm and head: the teacher's.
    assert_layers_copied(student, teacher, LAYER_KEYS[model_type], spread_selection(4, 2), others_too=True)


def test_a_narrower_llama_starts_from_the_leading_heads_neurons_and_channels():
    teacher, student, _ = teacher_and_student("llama", depth=0.5, width=0.5, tie_word_embeddings=True)
    t, s = teacher.model.model, student.model.model
    # hidden 32 -> 16 channels; 4 query heads of 8 -> 2, 2 key-value heads -> 1; 64 neurons -> 32
    expected = {
        s.embed_tokens.weight: t.embed_tokens.weight[:, :16],
        s.layers[1].self_attn.q_proj.weight: t.layers[3].self_attn.q_proj.weight[:16, :16],
        s.layers[1].self_attn.k_proj.weight: t.layers[3].self_attn.k_proj.weight[:8, :16],
        s.layers[1].self_attn.o_proj.weight: t.layers[3].self_attn.o_proj.weight[:16, :16],
        s.layers[1].mlp.gate_proj.weight: t.layers[3].mlp.gate_proj.weight[:32, :16],
        s.layers[1].mlp.down_proj.weight: t.layers[3].mlp.down_proj.weight[:16, :32],
        s.layers[1].input_layernorm.weight: t.layers[3].input_layernorm.weight[:16],
        s.norm.weight: t.norm.weight[:16],
    }
    assert all(torch.equal(got, want) for got, want in expected.items())
    assert student.lm_head().weight is s.embed_tokens.weight  # tied embeddings stay tied


def test_fused_projections_are_cut_part_by_part():
    teacher, student, _ = teacher_and_student("phi3", depth=1.0, width=0.5)
    t, s = teacher.model.model.layers[0], student.model.model.layers[0]
    q, k, v = t.self_attn.qkv_proj.weight.split([32, 16, 16])  # 4 query heads of 8, 2 key-value heads
    parts = torch.cat([q[:16, :16], k[:8, :16], v[:8, :16]])
    assert torch.equal(s.self_attn.qkv_proj.weight, parts)
    gate, up = t.mlp.gate_up_proj.weight.split(64)
    assert torch.equal(s.mlp.gate_up_proj.weight, torch.cat([gate[:32, :16], up[:32, :16]]))
    teacher, student, _ = teacher_and_student("gpt2", depth=1.0, width=0.5)
    t, s = teacher.model.transformer.h[0].attn, student.model.transformer.h[0].attn
    q, k, v = t.c_attn.weight.split(32, dim=1)  # Conv1D: [in, out], 4 heads of 8 -> 2
    assert torch.equal(s.c_attn.weight, torch.cat([q[:16, :16], k[:16, :16], v[:16, :16]], dim=1))
    assert torch.equal(s.c_attn.bias, torch.cat([part[:16] for part in t.c_attn.bias.split(32)]))
