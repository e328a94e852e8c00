// decay_none.wgsl: time_mix_v5.wgsl's `decode` reading RWKV-6's per-token decay from the w plane
// of tm, where a separate product wrote it (decay_lora.wgsl computes it in place instead).
// No dispatch of its own.

fn decay_lora_words(tid: u32, hc: u32) -> DecayWords {
    return DecayWords(vec4<u32>(0u), vec4<u32>(0u));
}

fn decay_lora_parts(tid: u32, t: u32, hc: u32, pre: DecayWords) {}

// The decay LoRA output of element e (token row and channel) for invocation tid's channel.
fn decay_delta(tid: u32, e: u32) -> f32 {
    return tm[W * p.plane + e];
}
