"""rwkv_webgpu: RWKV language models on any WebGPU adapter."""
