"""Classifiers of the `transformers` library (family `hf`): built from their config or loaded from a
`save_pretrained` folder, wrapped to take the engine's inputs (token ids, images in [0, 1]) and give logits,
initialised from a teacher of their model type, their numbered outputs (`hidden_states.N`, `attentions.N`)
reached by name, and measured on no real memory."""
