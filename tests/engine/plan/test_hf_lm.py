"""Causal language models from the spec alone: the model types and config rules the server takes, the spec
whose classes are the vocabulary, a teacher folder's spec, students derived Minitron-style or given as a
config with the teacher's tokenizer ids, and the pairings refused with both sides named."""

import pytest

from engine.plan.errors import JobFailed
from engine.plan.hf_design import derive_hf_spec, pairing_problems, student_from_config
from engine.plan.hf_inputs import folder_spec
from engine.plan.hf_models import CAUSAL_LM_MODEL_TYPES, HFConfigRejected, check_hf_config
from engine.plan.scaling import spread_selection
from engine.plan.specs import HFSpec, reads_token_ids, vocabulary_size
from tests.engine.hf_factories import tiny_spec
from tests.lm_model_factories import BOS, EOS, LM_CONFIGS, LM_MAX_LENGTH, LM_VOCAB, PAD, lm_spec


def test_the_causal_language_models_of_the_issue_are_served():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert {"llama", "qwen2", "qwen3", "gpt2", "mistral", "phi3"} <= set(CAUSAL_LM_MODEL_TYPES)
    assert set(CAUSAL_LM_MODEL_TYPES) <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert set(LM_CONFIGS) == set(CAUSAL_LM_MODEL_TYPES)
    assert all(check_hf_config({"model_type": name}) == "causal-lm" for name in CAUSAL_LM_MODEL_TYPES)


def test_an_unknown_model_type_is_refused_saying_what_the_server_takes():
    with pytest.raises(HFConfigRejected, match="it takes these model types of transformers") as no:
        check_hf_config({"model_type": "gpt_neox"})
    assert "gpt2, llama" in str(no.value)
    with pytest.raises(HFConfigRejected, match="it takes .*: llama$"):
        check_hf_config({"model_type": "gpt2"}, allowed=("llama",))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"n_layer": 513}, "n_layer"),
        ({"n_embd": 2_000_000}, "n_embd"),
        ({"n_head": 2_000_000}, "n_head"),
        ({"n_positions": 2_000_000}, "n_positions"),
        ({"n_inner": 2_000_000}, "n_inner"),
        ({"vocab_size": 2_000_000}, "vocab_size"),
    ],
)
def test_a_gpt2_config_beyond_the_bounds_is_refused(config, field):
    with pytest.raises(HFConfigRejected, match=field):
        check_hf_config({"model_type": "gpt2", **LM_CONFIGS["gpt2"], **config})


def test_llama_sizes_and_remote_code_are_checked_as_for_classifiers():
    with pytest.raises(HFConfigRejected, match="num_hidden_layers asks for 600 layers"):
        check_hf_config({"model_type": "llama", "num_hidden_layers": 600})
    with pytest.raises(HFConfigRejected, match="num_key_value_heads"):
        check_hf_config({"model_type": "llama", "num_key_value_heads": 10**7})
    with pytest.raises(HFConfigRejected, match="auto_map"):
        check_hf_config({"model_type": "qwen2", "auto_map": {"AutoModelForCausalLM": "x.Evil"}})


def test_a_language_models_classes_are_its_vocabulary():
    spec = lm_spec("qwen2", vocab_size=151_936)  # Qwen2's, beyond any classifier's labels
    assert (spec.task, spec.num_classes, vocabulary_size(spec)) == ("causal-lm", 151_936, 151_936)
    assert (
        reads_token_ids(spec) and not reads_token_ids(tiny_spec("vit")) and reads_token_ids(tiny_spec("bert"))
    )
    with pytest.raises(ValueError, match="num_classes 50 is not its config's vocab_size 300"):
        HFSpec(config=lm_spec().config, num_classes=50, max_length=8)
    with pytest.raises(ValueError, match="needs vocab_size in its config"):
        HFSpec(config={"model_type": "llama"}, max_length=8)
    with pytest.raises(ValueError, match="needs max_length"):
        HFSpec(config=lm_spec().config)


def test_a_classifier_still_needs_its_labels():
    config = tiny_spec("bert").config
    with pytest.raises(ValueError, match="needs num_classes, its labels: 2 to 100,000"):
        HFSpec(config=config, max_length=8)
    with pytest.raises(ValueError, match="needs num_classes"):
        HFSpec(config=config, num_classes=151_936, max_length=8)


def test_a_language_model_folders_spec():
    gpt2 = {"model_type": "gpt2", **LM_CONFIGS["gpt2"], "n_positions": 1024}
    spec = folder_spec(gpt2, parameters=99, tokenizer_config={"model_max_length": 512})
    assert (spec.task, spec.num_classes, spec.max_length, spec.parameters) == ("causal-lm", LM_VOCAB, 512, 99)
    mistral = {"model_type": "mistral", **LM_CONFIGS["mistral"], "max_position_embeddings": 131_072}
    assert folder_spec(mistral).max_length == 8192  # no job reads more tokens a sample


def test_spread_layers_keep_the_first_and_the_last():
    assert spread_selection(12, 6) == [0, 2, 4, 7, 9, 11]
    assert spread_selection(4, 2) == [0, 3] and spread_selection(4, 4) == [0, 1, 2, 3]
    assert spread_selection(5, 1) == [0] and spread_selection(3, 0) == []
    for teacher in range(1, 30):
        for student in range(2, teacher + 1):
            kept = spread_selection(teacher, student)
            assert kept[0] == 0 and kept[-1] == teacher - 1 and kept == sorted(set(kept))


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [
        (
            "llama",
            {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_size": 16,
             "head_dim": 8, "intermediate_size": 32},
        ),
        (
            "qwen2",  # no head_dim in its config: the student's gives the teacher's
            {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_size": 16,
             "head_dim": 8, "intermediate_size": 32, "layer_types": ["full_attention"] * 2},
        ),
        (
            "phi3",  # hidden = heads x head_dim
            {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_size": 16,
             "intermediate_size": 32},
        ),
        ("gpt2", {"n_layer": 2, "n_head": 2, "n_embd": 16, "n_inner": 64}),  # n_inner null: 4 x n_embd
    ],
)  # fmt: skip
def test_a_derived_language_model_has_fewer_layers_heads_and_channels(model_type, expected):
    teacher = lm_spec(model_type).model_copy(update={"parameters": 1, "activation_floats": 1})
    student = derive_hf_spec(teacher, depth=0.5, width=0.5)
    assert {key: student.config[key] for key in expected} == expected
    assert (student.parameters, student.activation_floats) == (None, None)
    assert (student.num_classes, student.max_length) == (LM_VOCAB, LM_MAX_LENGTH)
    unchanged = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")
    assert all(student.config.get(key) == teacher.config.get(key) for key in unchanged)
    assert pairing_problems(teacher, student) == []


def test_width_keeps_each_group_of_query_heads_and_the_head_width():
    teacher = lm_spec("llama", num_attention_heads=8, num_key_value_heads=2, hidden_size=64, head_dim=8)
    config = derive_hf_spec(teacher, depth=1.0, width=0.25).config
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"]) == (1, 4, 8)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (16, 4)
    with pytest.raises(JobFailed, match="6 query heads .* no whole groups of its 4 key-value") as ungrouped:
        derive_hf_spec(lm_spec("llama", num_attention_heads=6, num_key_value_heads=4), 1.0, 0.5)
    assert ungrouped.value.code == "derive_unsupported"


def test_a_language_model_student_config_takes_the_teachers_tokenizer_ids():
    teacher = lm_spec("llama", vocab_size=LM_VOCAB, tie_word_embeddings=True)
    student = student_from_config(teacher, {"model_type": "qwen3", "num_hidden_layers": 1, "max_length": 8})
    ids = [student.config[key] for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")]
    assert ids == [LM_VOCAB, BOS, EOS, PAD] and student.num_classes == LM_VOCAB
    assert student.max_length == 8 and "max_length" not in student.config
    assert "tie_word_embeddings" not in student.config  # the student's own choice: transformers' default
    assert pairing_problems(teacher, student) == []
    gpt2 = student_from_config(teacher, {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2})
    assert (gpt2.config["vocab_size"], gpt2.max_length) == (LM_VOCAB, LM_MAX_LENGTH)


def test_language_models_with_other_vocabularies_do_not_pair():
    teacher = lm_spec("llama")
    student = student_from_config(teacher, {"model_type": "gpt2", "vocab_size": 50_257})
    assert pairing_problems(teacher, student) == [
        "the teacher's vocabulary has 300 tokens and the student's 50,257: a student learns the teacher's "
        "next-token distribution over the same token ids, so it must share the teacher's tokenizer: give it "
        "vocab_size 300 (or leave vocab_size out)."
    ]


def test_a_language_model_and_a_classifier_do_not_pair_either_way():
    lm, classifier = lm_spec("llama"), tiny_spec("bert")
    (problem,) = pairing_problems(lm, classifier)
    assert problem.startswith("the teacher (llama) is a causal language model and the student (bert) a text ")
    assert "choose a model_type of a causal language model for the student" in problem
    assert (
        "is a text classifier and the student (gpt2) a causal language model"
        in pairing_problems(classifier, lm_spec("gpt2"))[0]
    )
    with pytest.raises(ValueError, match="choose a model_type of a text classifier"):
        student_from_config(classifier, {"model_type": "llama"})
    with pytest.raises(ValueError, match="choose a model_type of a causal language model"):
        student_from_config(lm, {"model_type": "bert"})


def test_a_language_model_student_reads_no_more_tokens_than_it_places():
    teacher = lm_spec("llama")
    gpt2 = student_from_config(teacher, {"model_type": "gpt2", "n_positions": 8})
    (positions,) = pairing_problems(teacher, gpt2)
    assert "has 8 n_positions and its max_length 16 needs 16: give the student n_positions 16" in positions
    longer = teacher.model_copy(update={"max_length": LM_MAX_LENGTH + 1})
    assert "give dataset.max_length 16 or less" in pairing_problems(teacher, longer)[0]
