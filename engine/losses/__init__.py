"""What a batch costs: the response and feature losses with their registries, FitNets projections,
TinyBERT's terms, and the objective that weighs them."""
