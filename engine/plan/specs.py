"""What a job asks of the engine: model architectures and training settings, and the files it reads.

Pydantic models without torch, so the API validates requests with exactly the rules the
engine builds from. Every model forbids unknown fields: a typo is an error, not a silent default.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.plan.hf_models import MAX_CONFIG_SIZE, HFConfigRejected, HFTask, check_hf_config


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Floors that keep the arithmetic finite: a weight below 1e-3 of another is no share worth computing (and
# 1e-320 is 0 in float32); logits / T must not overflow float32.
TeacherWeight = Annotated[float, Field(ge=0.001, le=1000.0)]
Temperature = Annotated[float, Field(ge=0.01, le=1000.0)]
LossWeight = Annotated[float, Field(ge=0.0, le=1000.0)]
LearningRate = Annotated[float, Field(gt=0.0, le=10.0)]
SoftLoss = Literal["kl", "ce", "mse", "dkd", "dist"]
TokenDivergence = Literal["forward_kl", "reverse_kl", "jsd"]  # engine.losses.token_divergences
STANDARDIZABLE_SOFT_LOSSES = ("kl", "ce", "dkd")  # the KL-based losses that Sun et al. 2024 standardise
MAX_LABELS = 100_000  # a classifier's (a causal language model's classes, its vocabulary, may be more)


def _family_required(schema: dict) -> None:
    # The union picks the family by this field, so requests must send it; Python code may omit it.
    schema["required"] = ["family", *schema.get("required", [])]


class ModelSpec(Spec):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_family_required)


class MLPSpec(ModelSpec):
    """A multilayer perceptron over flattened inputs."""

    family: Literal["mlp"] = "mlp"
    input_shape: list[PositiveInt] = Field(min_length=1, max_length=4, description="Shape of one sample.")
    num_classes: int = Field(ge=2, le=100_000)
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default=[], max_length=64)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")
    activation: Literal["relu", "gelu", "tanh"] = "relu"


class CNNSpec(ModelSpec):
    """A small ResNet-style network for `[C, H, W]` inputs.

    A 3x3 stem, then one stage per entry of `widths`; each stage has `blocks_per_stage` residual
    blocks and every stage after the first halves the resolution. Global average pooling, then
    a linear classifier.
    """

    family: Literal["cnn"] = "cnn"
    input_shape: list[PositiveInt] = Field(
        min_length=3, max_length=3, description="[channels, height, width]."
    )
    num_classes: int = Field(ge=2, le=100_000)
    widths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[16, 32, 64], min_length=1, max_length=8
    )
    blocks_per_stage: int = Field(default=1, ge=1, le=16)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")


class TransformerSpec(ModelSpec):
    """A BERT-style encoder classifier over token ids `[N, max_length]` (0 = padding).

    Token and position embeddings, `num_layers` post-norm encoder layers, and a linear classifier
    over the `pooling` of the last hidden states.
    """

    family: Literal["transformer"] = "transformer"
    vocab_size: int = Field(ge=2, le=1_000_000)
    max_length: int = Field(ge=1, le=8192, description="Longest token sequence; longer text is truncated.")
    num_classes: int = Field(ge=2, le=100_000)
    hidden_size: int = Field(default=128, ge=8, le=8192)
    num_layers: int = Field(default=2, ge=1, le=48)
    num_heads: int = Field(default=2, ge=1, le=128)
    intermediate_size: int = Field(default=512, ge=8, le=32768)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Literal["cls", "mean"] = Field(default="cls", description="`cls`: the first token's state.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class HFSpec(ModelSpec):
    """A classifier or a causal language model of the `transformers` library, built from its config:
    `model_type` and the fields of its `config.json` (those left out take transformers' defaults).

    A text `model_type` (`bert`, `roberta`, `distilbert`, ...) is an `AutoModelForSequenceClassification`
    over token ids `[N, max_length]` (the tokenizer's padding id where there is no token); an image one
    (`vit`, `resnet`, `mobilenet_v2`, ...) an `AutoModelForImageClassification` over images `[C, H, W]` with
    values in [0, 1], which it normalises with its own `image_mean` and `image_std`. Its labels
    (`num_labels`, `id2label`, `label2id`) are the teacher's. A causal language model (`llama`, `qwen2`,
    `gpt2`, ...) is an `AutoModelForCausalLM` over token ids `[N, max_length]`, whose classes are its
    vocabulary: the next token's logits at every position range over the config's `vocab_size` ids, the
    teacher tokenizer's.
    """

    family: Literal["hf"] = "hf"
    config: dict[str, Any] = Field(
        description="The model's config as `config.json` holds it, `model_type` included; "
        "`trust_remote_code` is never used, so `auto_map` is refused."
    )
    num_classes: int | None = Field(
        default=None,
        ge=2,
        le=MAX_CONFIG_SIZE,
        description=f"A classifier's labels (required, at most {MAX_LABELS:,}): the config's `num_labels`. "
        "A causal language model's vocabulary: its config's `vocab_size`, which it defaults to.",
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="Text and causal language models: the token ids per sample; longer text is truncated.",
    )
    input_shape: list[PositiveInt] | None = Field(
        default=None, min_length=3, max_length=3, description="Images: [channels, height, width]."
    )
    image_mean: list[float] | None = Field(
        default=None, min_length=1, max_length=4, description="Images: the per-channel mean subtracted."
    )
    image_std: list[Annotated[float, Field(gt=0.0)]] | None = Field(
        default=None, min_length=1, max_length=4, description="Images: the per-channel deviation divided by."
    )
    parameters: int | None = Field(
        default=None, ge=0, description="Counted by the service from the config, on no real memory."
    )
    activation_floats: int | None = Field(
        default=None, ge=0, description="Counted by the service: floats one sample's forward pass keeps."
    )

    @field_validator("config")
    @classmethod
    def _buildable(cls, config: dict[str, Any]) -> dict[str, Any]:
        try:
            check_hf_config(config)
        except HFConfigRejected as rejected:
            raise ValueError(str(rejected)) from None
        return config

    @property
    def task(self) -> HFTask:
        return check_hf_config(self.config)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @model_validator(mode="after")
    def _inputs_of_its_task(self) -> Self:
        needed = "input_shape" if self.task == "image" else "max_length"
        if getattr(self, needed) is None:
            raise ValueError(f"a {self.task} model ({self.model_type}) needs {needed}")
        return self

    @model_validator(mode="after")
    def _outputs_of_its_task(self) -> Self:
        if self.task == "causal-lm":
            return self._vocabulary_as_classes()
        if self.num_classes is None or self.num_classes > MAX_LABELS:
            raise ValueError(
                f"a {self.task} classifier ({self.model_type}) needs num_classes, its labels: 2 to "
                f"{MAX_LABELS:,}"
            )
        return self

    def _vocabulary_as_classes(self) -> Self:
        vocab = self.config.get("vocab_size")
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
            raise ValueError(
                f"a causal language model ({self.model_type}) needs vocab_size in its config: the token ids "
                "its tokenizer gives, whose next-token logits it outputs"
            )
        if self.num_classes not in (None, vocab):
            raise ValueError(
                f"a causal language model's classes are its vocabulary: num_classes {self.num_classes} is "
                f"not its config's vocab_size {vocab}; leave num_classes out"
            )
        self.num_classes = vocab
        return self


ArchitectureSpec = Annotated[MLPSpec | CNNSpec | TransformerSpec | HFSpec, Field(discriminator="family")]


def reads_token_ids(spec: ArchitectureSpec) -> bool:
    """Whether the model reads token ids (a transformer, a transformers text model or causal language model)
    rather than features."""
    return spec.family == "transformer" or (spec.family == "hf" and spec.task != "image")


def is_causal_lm(spec: ArchitectureSpec | None) -> bool:
    """Whether the model is a transformers causal language model, whose classes are its vocabulary."""
    return isinstance(spec, HFSpec) and spec.task == "causal-lm"


def vocabulary_size(spec: TransformerSpec | HFSpec) -> int | None:
    """The token ids a text model embeds; None where its config leaves transformers' default."""
    return spec.vocab_size if isinstance(spec, TransformerSpec) else spec.config.get("vocab_size")


class FeaturePair(Spec):
    """FitNets-style hint: the student's layer output, through a learned projection, imitates the teacher's.

    Layers are module paths (e.g. `hidden.0`, `stages.1`), reached with forward hooks. An `hf` model's layers
    may also be named as transformers numbers its outputs: `hidden_states.N` (N = 0: what enters the first
    layer, the embeddings' output; N >= 1: layer N-1's output) and, for its attention models, `attentions.N`
    (layer N's attention probabilities, computed with eager attention). The projection (a linear map, or a
    1x1 convolution for feature maps) trains with the student and is not exported.
    """

    teacher: str = Field(
        min_length=1,
        max_length=256,
        description="Module path in the teacher; on an `hf` one also `hidden_states.N` or `attentions.N`.",
    )
    student: str = Field(
        min_length=1,
        max_length=256,
        description="Module path in the student; on an `hf` one also `hidden_states.N` or `attentions.N`.",
    )
    weight: float = Field(default=1.0, gt=0.0, le=1000.0)
    loss: Literal["mse", "cosine"] = "mse"
    teacher_index: int = Field(default=0, ge=0, le=63, description="Which teacher, with several.")


class Search(Spec):
    """What an `auto` search chooses from and what it may spend: successive halving over the combinations
    of the `auto` fields' candidates (see `engine/train/search.py`)."""

    temperatures: list[Temperature] = Field(default=[1.0, 2.0, 4.0, 8.0, 16.0], min_length=1, max_length=16)
    alphas: list[LossWeight] = Field(default=[0.5, 0.9], min_length=1, max_length=16)
    learning_rates: list[LearningRate] = Field(
        default=[3e-4, 1e-3, 3e-3], min_length=1, max_length=16, description="For `learning_rate: auto`."
    )
    soft_losses: list[SoftLoss] = Field(
        default=["kl", "dkd", "dist"],
        min_length=1,
        max_length=5,
        description="For `soft_loss: auto` (with `logit_standardization`, those it works with).",
    )
    trial_epochs: int = Field(default=1, ge=1, le=100, description="Epochs of each trial of the first rung.")
    budget_epochs: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Epochs the trials may train together, not counting those of the trial the student "
        "goes on from (the standard method). Default: `training.epochs`, so that the search costs no more "
        "than the run after it.",
    )
    reduction_factor: int = Field(
        default=3,
        ge=2,
        le=10,
        description="Each rung after the first trains the best 1/reduction_factor of the rung before "
        "(at least 2) reduction_factor times longer; the last takes what is left of the budget.",
    )


class TermWeights(Spec):
    """The weights of a loss's terms (its fields named `*_weight`), which must not all be 0."""

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        weights = {name: getattr(self, name) for name in type(self).model_fields if name.endswith("_weight")}
        if not any(weights.values()):
            raise ValueError(f"{', '.join(weights)} are all 0: give one > 0")
        return self


class TransformerDistillation(TermWeights):
    """TinyBERT intermediate-layer distillation (Jiao et al. 2020) between two `transformer` models, or two
    `hf` text encoders (BERT, RoBERTa, DistilBERT, DeBERTa, ELECTRA, MPNet, ModernBERT and their kin:
    `engine.plan.hf_layers.TINYBERT_MODEL_TYPES`), which then attend eagerly so that their attention
    probabilities exist; a model of one kind does not learn from the other.

    Student layer m learns the hidden states (through a learned projection W_h) and the attention
    probabilities of teacher layer `layer_map[m]`; the embedding outputs are matched through W_e. An `hf`
    model's are its `hidden_states.0`, `hidden_states.N` and `attentions.N-1` (see `FeaturePair`).
    Padded positions (the student's padding id) are left out. The projections train with the student and
    are not exported.
    """

    embedding_weight: LossWeight = Field(
        default=1.0, description="Weight of the embedding-output loss (MSE through W_e)."
    )
    hidden_weight: LossWeight = Field(
        default=1.0, description="Weight of the hidden-state loss (MSE through W_h, mean over mapped layers)."
    )
    attention_weight: LossWeight = Field(
        default=1.0,
        description="Weight of the attention-probability loss (MSE, mean over mapped layers; averaged "
        "over heads when the head counts differ).",
    )
    layer_map: list[int] | None = Field(
        default=None,
        max_length=48,
        description="0-based teacher layer for each student layer (one entry per student layer). "
        "Default: uniform, student layer m (1-based) of M reads teacher layer ceil(m * N / M) of N.",
    )


class DKDWeights(TermWeights):
    """Decoupled knowledge distillation (Zhao et al. 2022, "Decoupled Knowledge Distillation", CVPR): the KL
    at T split at the target class into TCKD and NCKD, weighted apart. The defaults are the paper's code's
    (mdistiller: ALPHA 1, BETA 8)."""

    target_weight: LossWeight = Field(
        default=1.0,
        description="Weight of TCKD: the KL between the binary (target class, all other classes) "
        "distributions.",
    )
    non_target_weight: LossWeight = Field(
        default=8.0,
        description="Weight of NCKD: the KL between the distributions over the non-target classes.",
    )


class DISTWeights(TermWeights):
    """DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher", NeurIPS): the student's
    probabilities correlate with the teacher's, per sample (inter-class) and per class (intra-class). The
    defaults are the official code's (beta = gamma = 1)."""

    inter_weight: LossWeight = Field(
        default=1.0,
        description="Weight of the inter-class relation: 1 - the mean Pearson correlation between each "
        "sample's student and teacher probabilities.",
    )
    intra_weight: LossWeight = Field(
        default=1.0,
        description="Weight of the intra-class relation: 1 - the mean Pearson correlation between each "
        "class's student and teacher probabilities across the batch.",
    )


class Sampling(Spec):
    """How a causal language model continues the prompts of the training blocks: a prompt is the tokens before
    a block's first learnt one (a `prompt` record's, a conversation's up to the assistant's turn), or, for
    plain `text`, the block's first `prompt_tokens`."""

    max_new_tokens: int = Field(
        default=64,
        ge=1,
        le=8192,
        description="Tokens generated after each prompt at most, fewer where the prompt and its "
        "continuation would outgrow dataset.max_length; a continuation ends at the tokenizer's EOS.",
    )
    temperature: float = Field(
        default=1.0, ge=0.0, le=100.0, description="The sampling temperature; 0: greedy decoding."
    )
    prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="`text` records: each block's first this many tokens are its prompt, at most "
        "dataset.max_length - 2 (room for a token and the EOS). Default: a quarter of max_length. Records "
        "with prompts (`prompt` and `completion`, `messages`) bring their own.",
    )


class SequenceLevel(Sampling):
    """Sequence-level knowledge distillation (Kim & Rush 2016): the teacher completes the training prompts
    before the first step, and the student learns from the prompts and the teacher's completions."""

    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="The sampling temperature; 0 (the default): greedy decoding, the nearest to the paper's "
        "beam search.",
    )
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: from the fewest tokens with this mass.",
    )
    samples_per_prompt: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Completions the teacher samples for each prompt, each a record (temperature > 0).",
    )

    @model_validator(mode="after")
    def _samples_differ(self) -> Self:
        if self.samples_per_prompt > 1 and self.temperature == 0:
            raise ValueError(
                f"samples_per_prompt {self.samples_per_prompt} with temperature 0 (greedy decoding) would "
                "give the same completion each time: set temperature > 0, or samples_per_prompt 1"
            )
        return self


class OnPolicy(Sampling):
    """On-policy distillation (GKD, Agarwal et al. 2024): on a share of the steps the student samples
    continuations of the batch's prompts and learns the teacher's next-token distributions on its own
    tokens."""

    share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="GKD's lambda: the share of training steps whose batch is the student's own "
        "continuations of the batch's prompts, drawn step by step from the run's seeded generator.",
    )


class DistillationConfig(Spec):
    """Hinton et al. (2015): loss = alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + beta * CE(s, y),
    plus the weighted feature losses of `features`; `soft_loss` chooses another soft term than the KL."""

    temperature: Temperature | Literal["auto"] = Field(
        default=4.0,
        description="Softmax temperature T. `auto`: the search picks it from `search.temperatures` by "
        "validation accuracy (needs validation labels).",
    )
    final_temperature: Temperature | None = Field(
        default=None, description="If set, T moves from `temperature` to this over training."
    )
    temperature_schedule: Literal["linear", "cosine"] = Field(
        default="linear", description="How T moves to `final_temperature`."
    )
    alpha: LossWeight | Literal["auto"] = Field(
        default=0.9,
        description="Weight of the soft (teacher) loss. `auto`: the search picks it from `search.alphas`.",
    )
    beta: LossWeight = Field(default=0.1, description="Weight of the hard (label) loss.")
    soft_loss: SoftLoss | Literal["auto"] = Field(
        default="kl",
        description="`kl`: KL(teacher || student) at T, times T^2. `ce`: cross-entropy with the softened "
        "teacher distribution, times T^2 (KL plus the teacher's constant entropy). `mse`: squared error "
        "between the logits (logit matching; T cancels out). `dkd`: decoupled KD (Zhao et al. 2022), "
        "weighted by `dkd`; its target class is the label, or on unlabeled data the teachers' most likely "
        "class. `dist`: DIST (Huang et al. 2022), correlations of the probabilities at T, weighted by "
        "`dist`. `auto`: the search picks it from `search.soft_losses`.",
    )
    dkd: DKDWeights = Field(default=DKDWeights(), description="`soft_loss: dkd`: its terms' weights.")
    dist: DISTWeights = Field(default=DISTWeights(), description="`soft_loss: dist`: its terms' weights.")
    logit_standardization: bool = Field(
        default=False,
        description="Logit standardisation (Sun et al. 2024): the soft loss compares the student's and the "
        "teachers' logits z-scored per sample, (z - mean) / (std + 1e-7) over the classes, then divided by T "
        "(the T^2 factor stays, as in the paper's code). The hard loss reads the raw logits. With soft_loss "
        "`kl`, `ce` or `dkd`.",
    )
    ensemble: Literal["mean", "random"] = Field(
        default="mean",
        description="With several teachers: `mean` averages their softened distributions (by weight); "
        "`random` draws one teacher per batch (by weight).",
    )
    method: Literal["standard", "mutual", "born_again"] = Field(
        default="standard",
        description="`mutual`: the student and its `peers` train together, each also learning from the "
        "others' softened outputs (deep mutual learning; with alpha 0, from the peers and labels only). "
        "`born_again`: `generations` students of the same architecture, each taught by the previous one "
        "(the first by the teacher). The best on the validation set is the artifact; all are reported.",
    )
    peers: list[ArchitectureSpec] = Field(
        default=[],
        max_length=7,
        description="`mutual`: the other students (default: one of the student's own).",
    )
    mutual_weight: LossWeight = Field(default=1.0, description="`mutual`: weight of the peers' loss.")
    generations: int = Field(default=2, ge=1, le=10, description="`born_again`: how many students in turn.")
    search: Search = Field(
        default=Search(), description="How fields set to `auto` are chosen: candidates and budget."
    )
    features: list[FeaturePair] = Field(
        default=[],
        max_length=64,
        description="Feature (hint) losses between named layers, added to the loss.",
    )
    teacher_cache: Literal["auto", "off"] = Field(
        default="auto",
        description="`auto`: where the teachers see the same inputs in every epoch (no augmentation), each "
        "teacher's outputs (logits, and the layers that feature pairs and TinyBERT read) are computed once "
        "over the training and validation sets and read back in every epoch, trial, generation and peer; "
        "they are kept for the tenant's later jobs with the same teachers and data. The student is the "
        "same as with `off`, which runs the teachers on every batch.",
    )
    teacher_cache_precision: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32",
        description="How the cached layer outputs are stored (logits are always float32): `float32` gives "
        "exactly the uncached values; `float16` and `bfloat16` halve the size of large feature maps, "
        "rounding the features the student imitates.",
    )
    divergence: TokenDivergence = Field(
        default="forward_kl",
        description="A causal language model's token-level divergence between the teacher's and the "
        "student's next-token distributions at T, weighted by `alpha` (times T^2), beside the next-token "
        "cross-entropy weighted by `beta`. `forward_kl`: KL(teacher || student), Hinton's KD, "
        "mass-covering; `reverse_kl`: KL(student || teacher), mode-seeking (MiniLLM); `jsd`: the "
        "generalized Jensen-Shannon divergence of GKD with `jsd_beta`, in TRL's convention.",
    )
    jsd_beta: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="`divergence: jsd`: the teacher's share of the mixture M = beta * teacher + (1 - beta) * "
        "student; 0.5 is the symmetric Jensen-Shannon divergence; 0 and 1 are the forward and reverse KL "
        "(TRL's GKDConfig.beta).",
    )
    top_k: int | None = Field(
        default=64,
        ge=1,
        description="A causal language model's teacher is read as its k most likely next tokens at each "
        "position and the rest of the vocabulary as one outcome (their log-probabilities kept in float16), "
        "with or without the teacher cache, so the student is the same either way; the divergence is then "
        "over those k + 1 outcomes (at most the full one, equal when k covers the vocabulary), and so is the "
        "per-epoch `validation_kl` (the job's final `kl_to_teacher` is over the whole vocabulary). With "
        "`teacher_cache: auto` the teacher runs once over the training and validation blocks and its top-k "
        "tables are kept for later jobs. A k over the vocabulary reads the whole vocabulary (k = its size). "
        "null: the whole vocabulary, exactly, with the teacher run on every batch (never cached).",
    )
    sequence_level: SequenceLevel | None = Field(
        default=None,
        description="Causal language models: sequence-level KD (Kim & Rush 2016). Before the first step the "
        "teacher completes every training block's prompt as these settings say (seeded by training.seed; "
        "the time counts against training.max_seconds), and the student trains on the prompts and the "
        "teacher's completions instead of the dataset's blocks, learning the completions' tokens by the "
        "token-level divergence (`alpha`) and the cross-entropy (`beta`). Every completion ends with the "
        "EOS, one cut at max_new_tokens or dataset.max_length too. The completions are the artifact "
        "`teacher_generations.jsonl`, `prompt` and `completion` records: upload it as a dataset and a later "
        "job trains on the very same blocks without generating them again (dataset.packing and truncation "
        "left at their defaults). Validation stays on the dataset. Default: off.",
    )
    on_policy: OnPolicy | None = Field(
        default=None,
        description="Causal language models: on-policy distillation (GKD, Agarwal et al. 2024). On a `share` "
        "of the steps the student samples continuations of the batch's prompts (in eval mode, without "
        "gradient, seeded from the run's generator, so that a resumed job is the same), and learns by "
        "`divergence` (`jsd` or `reverse_kl`, usually) the teacher's next-token distributions on its "
        "sampled tokens, weighted by `alpha`; the cross-entropy (`beta`) is not applied to them, being the "
        "student's own tokens (`hard_loss` still reports it). The other steps learn from the batch as usual. "
        "Default: off.",
    )
    alone_reference: bool = Field(
        default=False,
        description="A causal language model's job also trains the same student, from the same start and as "
        "many epochs, on the next-token cross-entropy alone (alpha 0, beta 1, no generations): the "
        "reference that says what distillation brought. Its series are named `alone_...`; `metrics.alone` "
        "holds its validation perplexity and accuracy, and `metrics.gap_closed` the share of the "
        "perplexity gap between it and the teacher that the distilled student closed. The job trains "
        "twice as long; its exported student is the distilled one.",
    )
    transformer: TransformerDistillation | None = Field(
        default=None,
        description="TinyBERT layer distillation between the student and the (first) teacher: two "
        "transformers (the teacher's architecture given) or two `hf` text encoders. Embedding, hidden-state "
        "and attention losses, reported per epoch, and their weighted sum `tinybert_loss` added to the loss. "
        "Default: off.",
    )

    @field_validator("logit_standardization")
    @classmethod
    def _standardizable_soft_loss(cls, standardize: bool, info: ValidationInfo) -> bool:
        soft_loss = info.data.get("soft_loss")
        if standardize and soft_loss not in (*STANDARDIZABLE_SOFT_LOSSES, "auto"):
            raise ValueError(
                f"logit_standardization works with soft_loss `kl`, `ce` or `dkd` (the KL-based losses that "
                f"Sun et al. 2024 standardise), not `{soft_loss}`: choose one of those, or set "
                "logit_standardization to false"
            )
        return standardize

    @model_validator(mode="after")
    def _some_loss(self) -> Self:
        if (
            self.alpha == 0
            and self.beta == 0
            and not self.features
            and self.transformer is None
            and self.method != "mutual"
        ):
            raise ValueError("alpha and beta are both 0: at least one loss must have a positive weight")
        return self


class Augmentation(Spec):
    """Random changes to image batches `[C, H, W]`, the same for the teachers' and the student's input."""

    shift: int = Field(
        default=0, ge=0, le=16, description="Shift by up to this many pixels each way (zero fill)."
    )
    flip: bool = Field(default=False, description="Mirror half the images left-right.")


class TrainingConfig(Spec):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    learning_rate: LearningRate | Literal["auto"] = Field(
        default=1e-3, description="`auto`: picked by trials over `distillation.search.learning_rates`."
    )
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="Only for `sgd`.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        default="constant",
        description="`constant`: the same rate throughout; `cosine`: from `learning_rate` down to 0 at the "
        "last step, which trains MNIST students better in 10 epochs or more (see make bench-defaults); "
        "`linear`: down to 0 in a straight line, as transformers' fine-tuning does (an `hf` student's "
        "default).",
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="The learning rate rises linearly from 0 over this many epochs' steps, then follows "
        "`lr_schedule` (`cosine` decays over the steps after the warm-up).",
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(
        default=0.1, gt=0.0, le=0.5, description="Seeded hold-out used when no validation file is given."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="`auto`: CUDA when there is one."
    )
    devices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes that train the student together (data parallel, DistributedDataParallel): on "
        "CUDA one GPU each (the worker must have that many, else the job fails `device_unavailable`), on "
        "the CPU that many processes sharing its cores. `batch_size` is the total of a step over all of "
        "them (each takes its share), so the learning rate, the steps per epoch and the schedules mean the "
        "same for any number.",
    )
    augmentation: Augmentation = Field(default=Augmentation(), description="For image data only.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="The training steps' arithmetic. `auto`: bfloat16 autocast on a GPU that has it (with "
        "TF32 matmuls), float32 elsewhere; `fp32`: exact float32 (no TF32); `bf16`: bfloat16 autocast; "
        "`fp16`: float16 autocast with a gradient scaler. The CPU stays in float32 unless asked. Evaluation "
        "is in float32.",
    )
    compile: bool = Field(
        default=False,
        description="Compile the student with torch.compile: faster steps after a compilation of tens of "
        "seconds; where it fails, an event says why and the student trains without it.",
    )
    max_seconds: float | None = Field(
        default=None,
        gt=0.0,
        description="Wall-clock seconds the job may take once a worker picks it up: the teachers' loading, "
        "the teacher-output cache's pass, every `auto` trial and generation together. Past it the job "
        "ends `failed` (`time_limit_exceeded`), its events say the step it reached, and its checkpoint "
        "is kept. At most the server's `DISTILL_MAX_JOB_SECONDS` (default: that).",
    )


# `safetensors` holds weights only, the job declares the architecture; `pt2` and `onnx` hold programs.
# `hf`: a `save_pretrained` folder of transformers, archived (.zip, .tar, .tar.gz), safetensors weights only.
TeacherFormat = Literal["safetensors", "pt2", "onnx", "hf"]


class TeacherSource(Spec):
    format: TeacherFormat
    architecture: ArchitectureSpec | None = None
    weight: TeacherWeight = Field(default=1.0, description="Share in the teacher ensemble.")


class TextOptions(Spec):
    """How a causal language model's records become blocks of `max_length` tokens (engine.data.lm_text)."""

    packing: bool | None = Field(
        default=None,
        description="Causal language models: join the samples, each ending with the tokenizer's EOS, into "
        "one stream cut into blocks of max_length tokens, as transformers' run_clm does. Default: packed for "
        "`text` records, not for `prompt`/`completion` or `messages` (packed, a completion would read an "
        "unrelated sample before its prompt).",
    )
    truncation: Literal["error", "left", "right"] = Field(
        default="error",
        description="Causal language models: an unpacked prompt and completion, or conversation, longer than "
        "max_length is an error naming its record (`error`), or keeps its last (`left`) or first (`right`) "
        "max_length tokens. An unpacked `text` goes on in the next block.",
    )


LoraTarget = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]


class LoraConfig(Spec):
    """A LoRA student (Hu et al. 2021, with `peft`): the student's initial weights (the teacher's, a derived
    student's) stay frozen, and next to each targeted linear layer W a low-rank update B @ A (A `[r, in]`,
    B `[out, r]`, B starting at 0) learns, the layer computing W x + (alpha / r) * B A x. Only A and B train;
    at the end they are merged into W (`student.hf.zip`: plain weights) and kept apart too
    (`student.lora.zip`: peft's adapter folder)."""

    r: int = Field(default=8, ge=1, le=1024, description="The rank of each update B @ A.")
    alpha: float = Field(
        default=16.0, gt=0.0, le=100_000.0, description="The update's scale is alpha / r (LoRA's lora_alpha)."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input while they train."
    )
    target_modules: list[LoraTarget] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The linear layers adapted, by the end of their module names (`q_proj` adapts every "
        "layer's `self_attn.q_proj`): a decoder layer's own, not the embeddings or the LM head. Default: "
        "peft's choice for the model type (the attention's `q_proj` and `v_proj`; GPT-2's `c_attn`), and "
        "Phi-3's fused `qkv_proj`, for which peft has none.",
    )
    parameters: int | None = Field(
        default=None,
        ge=0,
        description="The adapters' parameters, which alone train: counted by the service at submission "
        "(whatever the request says), for the job's memory bound.",
    )


class EngineJob(Spec):
    """Everything the engine needs besides the files themselves (`JobFiles`)."""

    teachers: list[TeacherSource] = Field(min_length=1, max_length=64)
    student_architecture: ArchitectureSpec
    student_init: Literal["random", "teacher"] = "random"
    student_lora: LoraConfig | None = None
    export: list[Literal["onnx", "int8"]] = []
    distillation: DistillationConfig = DistillationConfig()
    training: TrainingConfig = TrainingConfig()
    text: TextOptions = TextOptions()


@dataclass(frozen=True)
class JobFiles:
    """The files a job reads, as local paths: one per teacher (in the order of `EngineJob.teachers`), the
    training set, the validation set (default: a seeded hold-out of the training set) and the tokenizer
    that JSON Lines datasets are tokenized with; and the sha256 of those files the caller knows (the
    teacher cache's keys; the engine hashes the others)."""

    teachers: list[Path]
    train: Path
    validation: Path | None = None
    tokenizer: Path | None = None
    digests: Mapping[Path, str] = field(default_factory=dict)  # sha256 of the files, where known
