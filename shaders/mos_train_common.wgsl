// Declarations shared by BinaryMoS lite training's kernels mos_train_gates, mos_train_err and
// mos_train_small (prepended by the host: shaders::plain_kernel; docs/binarymos.md "Lite
// training"; host: src/gpu/mos_train.rs): the parameter block at binding 0 and a workgroup sum.

struct TrainParams {
    // Tokens, input features (weight columns), output features (weight rows), experts.
    t: u32,
    n: u32,
    o: u32,
    k: u32,
    // The slot of this step's loss in the loss buffer.
    step: u32,
    // dY = scale · (Y − target): 2 / t for the mean over tokens of the squared error.
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: TrainParams;

// Invocations of the workgroups that reduce (one token, or all the losses, each).
const WG: u32 = 64u;

var<workgroup> red: array<f32, 64>;

// The sum of `v` over the workgroup, returned to every invocation. Call in uniform control flow.
fn workgroup_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (li < h) {
            red[li] += red[li + h];
        }
        workgroupBarrier();
    }
    let s = red[0];
    // Everyone has read the sum before the next call writes `red` again.
    workgroupBarrier();
    return s;
}
