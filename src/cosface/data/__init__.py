"""Training data: sources of encoded images, the batched dataset, the sampler, synthetic faces."""
