"""How a student is made smaller than its teacher: sizes scaled by a fraction, and which teacher layers its
fewer layers start from. Shared by the designs of every family (`design`, `hf_design`)."""

import math


def scaled(size: int, fraction: float, minimum: int = 1) -> int:
    """`size * fraction`, rounded half up and at least `minimum`."""
    # Half up, not Python's round-half-to-even: depth 0.5 of 5 layers is 3, as a reader expects.
    return max(minimum, math.floor(size * fraction + 0.5))


def layer_selection(teacher_count: int, student_count: int) -> list[int]:
    """Which teacher layer initialises each student layer: `floor(i * teacher_count / student_count)`.

    Evenly spaced and starting at the first layer, so halving the depth takes every second layer
    (12 -> 6: 0, 2, 4, 6, 8, 10), as DistilBERT does. Strictly increasing, since the step is >= 1.
    """
    if not 0 <= student_count <= teacher_count:
        raise ValueError(f"cannot pick {student_count} of {teacher_count} teacher layers")
    return [index * teacher_count // student_count for index in range(student_count)]
