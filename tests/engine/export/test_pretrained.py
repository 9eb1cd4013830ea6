"""The student as a `save_pretrained` folder: transformers loads it with no code of ours, its pipelines give
the wrapper's probabilities (text with the teacher's tokenizer, pairs included; images resized, scaled and
normalised as the student was trained) or, for a language model, its greedy continuation (with the teacher's
tokenizer, chat template and generation config), and the folder zips whole."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    GenerationConfig,
    pipeline,
)

from engine.export.pretrained import archive_folder, save_pretrained_folder
from engine.models.registry import build_model, count_parameters
from engine.plan.hf_design import derive_hf_spec
from engine.plan.hf_inputs import folder_spec
from tests.engine.hf_factories import BERT_SEP, FIRST_WORD, VOCAB, tiny_spec
from tests.lm_model_factories import BOS, CHAT_TEMPLATE, EOS, PAD, lm_folder

LABELS = {"id2label": {"0": "sad", "1": "calm", "2": "glad"}, "label2id": {"sad": 0, "calm": 1, "glad": 2}}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def words(*indices: int) -> str:
    return " ".join(f"w{index}" for index in indices)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    vocab = SPECIALS + [words(index) for index in range(FIRST_WORD, VOCAB)]
    assert vocab.index("[SEP]") == BERT_SEP
    BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}).save_pretrained(folder)
    return folder


def saved(spec, out_dir, teacher_folder=None):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    return model, save_pretrained_folder(model, spec, out_dir, teacher_folder)


def scores(results: list[dict]) -> dict[str, float]:
    return {result["label"]: result["score"] for result in results}


def labelled(probabilities: torch.Tensor) -> dict[str, float]:
    return dict(zip(["sad", "calm", "glad"], probabilities.tolist(), strict=True))


def test_a_text_student_runs_in_transformers_pipeline(teacher_folder, tmp_path):
    spec = tiny_spec("bert", **LABELS)
    model, folder = saved(spec, tmp_path, teacher_folder)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert loaded.config.id2label == {0: "sad", 1: "calm", 2: "glad"} and loaded.config.label2id["glad"] == 2
    classify = pipeline("text-classification", model=str(folder), top_k=None)
    one_text = [[2, 5, 17, 42, 9, BERT_SEP, 0, 0, 0, 0, 0, 0]]  # [CLS] w5 w17 w42 w9 [SEP], then padding
    pair = [[2, 5, 6, BERT_SEP, 7, 8, 9, BERT_SEP, 0, 0, 0, 0]]
    with torch.no_grad():
        expected = model(torch.tensor(one_text + pair)).softmax(dim=1)
    texts = [words(5, 17, 42, 9), {"text": words(5, 6), "text_pair": words(7, 8, 9)}]
    for results, probabilities in zip(classify(texts), expected, strict=True):
        assert scores(results) == pytest.approx(labelled(probabilities), abs=1e-5)


def test_an_image_student_runs_in_transformers_pipeline(tmp_path):
    spec = tiny_spec("vit", **LABELS)
    model, folder = saved(spec, tmp_path)
    assert isinstance(AutoModelForImageClassification.from_pretrained(folder).config.id2label, dict)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        expected = model(pixels).softmax(dim=1)[0]
    classify = pipeline("image-classification", model=str(folder), top_k=None)
    assert scores(classify(image)) == pytest.approx(labelled(expected), abs=1e-5)


def test_a_language_model_student_generates_in_transformers_pipeline(tmp_path):
    generation = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=5)
    teacher_folder = lm_folder(tmp_path / "teacher", "llama", tied=True, generation=generation)
    teacher = folder_spec(json.loads((teacher_folder / "config.json").read_text()))
    model, folder = saved(derive_hf_spec(teacher, depth=0.5, width=0.5), tmp_path / "student", teacher_folder)
    loaded, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("the cat sat", return_tensors="pt").input_ids
    continuation = []
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.lm_head()(model(ids)))
        for _token in range(5):  # greedy, as far as the generation config's max_new_tokens or </s>
            continuation.append(int(model.lm_head()(model(ids))[0, -1].argmax()))
            if continuation[-1] == EOS:
                break
            ids = torch.cat([ids, torch.tensor([continuation[-1:]])], dim=1)
    generate = pipeline("text-generation", model=str(folder))
    (generated,) = generate("the cat sat", do_sample=False)
    assert generated["generated_text"] == "the cat sat" + tokenizer.decode(
        continuation, skip_special_tokens=True
    )
    assert json.loads((folder / "generation_config.json").read_text())["max_new_tokens"] == 5  # the teacher's
    assert tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.model_max_length == teacher.max_length
    with safe_open(folder / "model.safetensors", "pt") as weights:  # the student's alone
        assert sum(weights.get_tensor(name).numel() for name in weights.keys()) == count_parameters(model)


def test_a_text_student_needs_its_teachers_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        saved(tiny_spec("bert"), tmp_path)


def test_the_folder_zips_whole(tmp_path):
    _, folder = saved(tiny_spec("resnet"), tmp_path / "student")
    archive = archive_folder(folder, tmp_path / "student.zip")
    with zipfile.ZipFile(archive) as opened:
        names = sorted(opened.namelist())
        assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]
        assert opened.read("model.safetensors") == (folder / "model.safetensors").read_bytes()
