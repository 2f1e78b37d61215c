//! Training (issue 15): the full distillation of BinaryMoS (Jo et al., arXiv 2406.12311,
//! NeurIPS 2024; docs/binarymos.md "Full mode"). The student is the loaded model with every
//! block linear BinaryMoS; it learns from the model as loaded (the teacher) by
//! `KL(teacher ‖ student)` on the logits plus `10 × Σ_l MSE(hidden_l)`, the latent weights
//! through the straight-through estimator, with AdamW on a cosine schedule.
//!
//! - `loss`: the loss terms and their gradients.
//! - `adamw`: the optimiser and the learning-rate schedule.
//! - `full`: the trainer (teacher, student, latent weights, data order, one step).
//! - `checkpoint`: everything a step depends on, written and read back, so that a resumed run
//!   continues bit for bit.
//!
//! The forward and backward passes themselves belong to the architectures (`model::arch::grad`,
//! one block per architecture); the BinaryMoS product's backward to its format
//! (`format::binarymos::grad`). Their large matrix products go through `linalg::Gemm`: the CPU
//! (`linalg::par_sgemm`) or, natively, the GPU (`gpu::TrainGemm`).

pub mod adamw;
pub mod checkpoint;
pub mod full;
pub mod loss;
