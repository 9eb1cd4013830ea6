"""Training: the loop over one student or a cohort, a student with what trains it, the methods
(standard, mutual, born-again), the `auto` search's trials, and the checkpoints a job resumes from."""
