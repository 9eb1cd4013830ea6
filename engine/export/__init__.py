"""What a job hands back: the student as safetensors and a pt2 program, as ONNX checked with ONNX
Runtime, as int8, and the latencies measured of each."""
