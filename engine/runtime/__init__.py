"""Where and how a step runs: the device, the precision, channels-last and `torch.compile`, and the
ranks of a job over several devices."""
