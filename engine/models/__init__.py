"""The model families a job trains or loads (`registry.MODEL_FAMILIES`, one module per family), the
layers reached by forward hooks, and a student initialised from its teacher's weights."""
