"""What a job costs, from its specs alone, without building a tensor: each model's parameters, the floats
its training keeps per sample for the backward pass, the memory at the peak of training, and the epochs
of every run. Torch-free, so the API bounds a job by these figures when it is submitted.

Parameters are exact (`tests/engine/plan/test_sizes.py` checks them against the built models); activations and
memory are estimates that err on the high side: what a model's forward pass keeps, times the batch.
"""

import math
from itertools import pairwise

from engine.plan.search_space import search_epochs
from engine.plan.specs import ArchitectureSpec, CNNSpec, EngineJob, HFSpec, MLPSpec, TransformerSpec

FLOAT_BYTES = 4
# Tensors of the parameters' size that training holds per parameter: weights and gradients, and the
# optimizer's state (Adam's two moments, SGD's momentum).
TRAINING_COPIES = {"adam": 4, "adamw": 4, "sgd": 3}


def parameter_count(spec: ArchitectureSpec | HFSpec) -> int:
    if isinstance(spec, HFSpec):
        return _measured(spec, "parameters")
    if isinstance(spec, MLPSpec):
        widths = [math.prod(spec.input_shape), *spec.hidden_sizes, spec.num_classes]
        return sum(inputs * outputs + outputs for inputs, outputs in pairwise(widths))
    if isinstance(spec, CNNSpec):
        return _cnn_parameters(spec)
    return _transformer_parameters(spec)


def _cnn_parameters(spec: CNNSpec) -> int:
    conv3x3 = lambda inputs, outputs: 9 * inputs * outputs + 2 * outputs  # noqa: E731 - with its BatchNorm
    total = conv3x3(spec.input_shape[0], spec.widths[0])
    inputs = spec.widths[0]
    for index, width in enumerate(spec.widths):
        for block in range(spec.blocks_per_stage):
            block_inputs = inputs if block == 0 else width
            total += conv3x3(block_inputs, width) + conv3x3(width, width)
            if block == 0 and (index > 0 or block_inputs != width):  # the 1x1 shortcut and its BatchNorm
                total += block_inputs * width + 2 * width
        inputs = width
    return total + inputs * spec.num_classes + spec.num_classes


def _transformer_parameters(spec: TransformerSpec) -> int:
    hidden, inner = spec.hidden_size, spec.intermediate_size
    embeddings = (spec.vocab_size + spec.max_length) * hidden + 2 * hidden
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden
    feed_forward = 2 * hidden * inner + inner + hidden + 2 * hidden
    return (
        embeddings
        + spec.num_layers * (attention + feed_forward)
        + hidden * spec.num_classes
        + spec.num_classes
    )


def stage_resolutions(spec: CNNSpec) -> list[tuple[int, int]]:
    """Height and width of each stage's feature maps: each stride-2 3x3 conv (padding 1) rounds up."""
    height, width = spec.input_shape[1:]
    resolutions = [(height, width)]
    for _ in spec.widths[1:]:
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        resolutions.append((height, width))
    return resolutions


def activation_floats(spec: ArchitectureSpec | HFSpec) -> int:
    """Floats one sample's forward pass keeps for the backward pass (an estimate from above)."""
    if isinstance(spec, HFSpec):
        return _measured(spec, "activation_floats")
    if isinstance(spec, MLPSpec):
        # Per hidden layer: the linear output, the activation and the dropout's; the flattened input; logits.
        return math.prod(spec.input_shape) + 3 * sum(spec.hidden_sizes) + spec.num_classes
    if isinstance(spec, CNNSpec):
        # Per block some eight maps (two convolutions and BatchNorms, the shortcut, the sum, ReLUs).
        maps = sum(
            8 * spec.blocks_per_stage * channels * height * width
            for channels, (height, width) in zip(spec.widths, stage_resolutions(spec), strict=True)
        )
        height, width = spec.input_shape[1:]
        return math.prod(spec.input_shape) + 3 * spec.widths[0] * height * width + maps + spec.num_classes
    length, hidden = spec.max_length, spec.hidden_size
    # Per layer: eleven [L, H] tensors, three [heads, L, L] (scores, probabilities, dropout), two [L, inner].
    layer = 11 * length * hidden + 3 * spec.num_heads * length * length + 2 * length * spec.intermediate_size
    return 4 * length * hidden + spec.num_layers * layer + spec.num_classes


def _measured(spec: HFSpec, field: str) -> int:
    """A `transformers` model's figure, which only building it tells: the service measures it on no real
    memory (`python -m engine.models.hf.sizing`) and sets it in the spec."""
    value = getattr(spec, field)
    if value is None:
        raise ValueError(
            f"the {spec.model_type} model's {field} is not set: measure the spec with "
            "engine.models.hf.sizing and set its parameters and activation_floats before sizing the job"
        )
    return value


def model_training_bytes(
    spec: ArchitectureSpec | HFSpec, optimizer: str, batch_size: int, adapters: int | None = None
) -> int:
    """A learner: its weights, gradients and optimizer state, and the activations of one batch; with LoRA
    `adapters` (their parameters), the model's frozen weights once and the adapters' copies."""
    weights = parameter_count(spec)
    if adapters is None:
        parameters = weights * TRAINING_COPIES[optimizer]
    else:
        parameters = weights + adapters * TRAINING_COPIES[optimizer]
    return FLOAT_BYTES * (parameters + batch_size * activation_floats(spec))


def frozen_model_bytes(parameters: int, spec: ArchitectureSpec | HFSpec | None, batch_size: int) -> int:
    """A teacher: its weights, and the activations of one batch where its architecture is known."""
    activations = 0 if spec is None else batch_size * activation_floats(spec)
    return FLOAT_BYTES * (parameters + activations)


def device_share(count: int, devices: int) -> int:
    """Each of `devices` processes' share of `count` samples (a step's batch, an epoch), rounded up: every
    process takes as many, so that they step together."""
    return -(-count // devices)


def cohort(job: EngineJob) -> list[ArchitectureSpec]:
    """The models trained together: the student, and its `mutual` peers (one of its own by default)."""
    if job.distillation.method == "mutual":
        return [job.student_architecture, *(job.distillation.peers or [job.student_architecture])]
    return [job.student_architecture]


def planned_epochs(job: EngineJob) -> int:
    """The epochs the job's runs go through one after another: the `auto` trials, then the main run (once
    per generation), and a language model's reference trained alone."""
    distillation = job.distillation
    runs = distillation.generations if distillation.method == "born_again" else 1
    return search_epochs(job) + job.training.epochs * (runs + distillation.alone_reference)


def model_epochs(job: EngineJob) -> int:
    """The planned epochs counting each model of a cohort: what the job asks to compute."""
    return planned_epochs(job) + (len(cohort(job)) - 1) * job.training.epochs


def trained_samples(job: EngineJob, train_samples: int) -> int:
    """The samples an epoch passes through the students: the training file's, or with `sequence_level` the
    teacher's completions of them, `samples_per_prompt` each."""
    sequence_level = job.distillation.sequence_level
    return train_samples * (1 if sequence_level is None else sequence_level.samples_per_prompt)
