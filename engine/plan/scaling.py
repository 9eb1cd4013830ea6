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


def spread_selection(teacher_count: int, student_count: int) -> list[int]:
    """Which teacher layer initialises each student layer, evenly spread with the first and the last kept
    (`round(i * (teacher_count - 1) / (student_count - 1))`, halves up; one layer: the first).

    For causal language models, whose first and last layers matter most to the next-token loss (Minitron,
    Muralidharan et al. 2024, ranks them so): 12 -> 6 takes 0, 2, 4, 7, 9, 11. Strictly increasing, since
    the step is >= 1.
    """
    if not 0 <= student_count <= teacher_count:
        raise ValueError(f"cannot pick {student_count} of {teacher_count} teacher layers")
    if student_count == 1:
        return [0]
    return [
        (2 * index * (teacher_count - 1) + student_count - 1) // (2 * (student_count - 1))
        for index in range(student_count)
    ]
