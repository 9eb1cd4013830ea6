"""A job's training and validation sets: arrays and batches, the `.npz` and JSON Lines readers with
their tokenizer, and image augmentation."""
