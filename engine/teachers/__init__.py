"""The frozen teachers: loading one (safetensors, pt2, ONNX), running them together as an ensemble,
and the teacher-output cache that runs them once per dataset."""
