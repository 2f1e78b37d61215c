//! GPT-2's block for training (issue 15, full BinaryMoS distillation): its layout in the
//! LayerNorm family's training pass (`arch::grad::ln_block`): one fused `[q k v]` linear (as
//! the loader presents `c_attn`, transposed to `3d × d`), the tanh GELU, pre-LN, positions from
//! row 0.

use super::{ATTN_NORM, DOWN, FFN_NORM, O, POS, QKV, UP};
use crate::model::arch::grad::ln_block::{FfnAct, Layout, Qkv};

pub(crate) fn layout() -> Layout {
    Layout {
        norms: [ATTN_NORM, FFN_NORM],
        qkv: Qkv::Fused(QKV),
        o: O,
        up: UP,
        down: DOWN,
        act: FfnAct::Gelu,
        post_norm: false,
        pos: POS,
        pos_offset: 0,
        project: None,
    }
}

#[cfg(test)]
mod tests {
    use crate::model::arch::grad::testing::{
        model_backward_matches_central_differences, training_forward_is_the_model_forward as same,
        DIR_REL_TOL, FD_REL_STEP,
    };
    use crate::model::arch::Arch;

    #[test]
    fn training_forward_is_the_model_forward() {
        same(Arch::Gpt2, 0);
    }

    #[test]
    fn model_backward_matches_central_differences_for_every_trained_tensor() {
        let worst = model_backward_matches_central_differences(Arch::Gpt2, 0, FD_REL_STEP, false);
        println!("GPT-2: worst tensor used {worst:.2} of its tolerance ({DIR_REL_TOL} of Σ|g·d|)");
        assert!(worst <= 1.0);
    }
}
