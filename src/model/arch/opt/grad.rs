//! OPT's block for training (issue 15, full BinaryMoS distillation): its layout in the
//! LayerNorm family's training pass (`arch::grad::ln_block`): q, k, v three linears, ReLU,
//! pre- or post-LN as the configuration says, positions from row 2, and the optional
//! `project_in` / `project_out`.

use super::{
    ATTN_NORM, DOWN, FFN_NORM, K, O, POS, POSITION_OFFSET, PROJECT_IN, PROJECT_OUT, Q, UP, V,
};
use crate::model::arch::grad::ln_block::{FfnAct, Layout, Qkv};
use crate::model::config::ModelConfig;

pub(crate) fn layout(c: &ModelConfig) -> Layout {
    Layout {
        norms: [ATTN_NORM, FFN_NORM],
        qkv: Qkv::Separate([Q, K, V]),
        o: O,
        up: UP,
        down: DOWN,
        act: FfnAct::Relu,
        post_norm: c.post_norm,
        pos: POS,
        pos_offset: POSITION_OFFSET,
        project: c.proj_dim.map(|_| [PROJECT_IN, PROJECT_OUT]),
    }
}

#[cfg(test)]
mod tests {
    use crate::model::arch::grad::testing::{
        model_backward_matches_central_differences, training_forward_is_the_model_forward,
    };
    use crate::model::arch::Arch;

    /// Pre-LN (flavour 0) and post-LN with the embedding projections (flavour 1).
    #[test]
    fn training_forward_is_the_model_forward_pre_and_post_ln() {
        for flavour in [0, 1] {
            training_forward_is_the_model_forward(Arch::Opt, flavour);
        }
    }

    /// ReLU has a kink at 0: a step of `FD_REL_STEP` (1 %) moves a few of the tiny model's
    /// pre-activations across it, where a central difference is not the derivative (measured:
    /// 1.3 % of `Σ|g·d|` off on one tensor). A step 5 times smaller crosses 5 times fewer kinks,
    /// and its 5 times larger f32 rounding (GPT-2's smooth GELU: 3e-4 at 1 %) stays below
    /// `DIR_REL_TOL` too, but for post-LN's routers, whose effect on the loss is near the loss's
    /// own rounding: there `FD_LOSS_ROUNDING` is allowed on top.
    const RELU_REL_STEP: f32 = 2e-3;

    #[test]
    fn model_backward_matches_central_differences_for_every_trained_tensor() {
        for flavour in [0, 1] {
            let worst =
                model_backward_matches_central_differences(Arch::Opt, flavour, RELU_REL_STEP, true);
            println!("OPT flavour {flavour}: worst tensor used {worst:.2} of its tolerance");
        }
    }
}
