//! Paced evaluation: in the browser a window of the real model takes seconds (minutes on a
//! software GPU), and work once submitted cannot be called back, so a run cancelled mid-window
//! used to keep the GPU busy to the window's end (and kept the GPU process busy after its tab
//! closed). When pacing is on (`set_pace`), an evaluation holds the command buffers it records
//! (one per block, cut at `Backend::block_boundary`) and submits them one by one with at most
//! `AHEAD` in flight, asking the caller between two whether to go on. Pieces are also cut every
//! few dispatches inside a block (`record.rs`), so Stop waits for a fraction of a block, not two.
//! Nothing is written with `Queue::write_buffer` (buffers.rs), so holding submissions back
//! changes no data a command reads; commands still run in recording order.

use crate::gpu::backend::Gpu;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Pieces submitted ahead of the one waited for: the GPU has the next block queued while the
/// host hears of the previous one, and a cancellation waits for at most this many blocks.
const AHEAD: usize = 2;

impl Gpu {
    /// Pace this device's evaluations from now on (the browser's worker turns it on).
    pub fn set_pace(&self, on: bool) {
        self.pace.set(on);
    }

    /// Start holding recorded work (only while pacing is on) or stop: stopping drops what is
    /// still held. Returns whether work is held back now.
    pub(crate) fn hold_pieces(&self, on: bool) -> bool {
        self.flush();
        let holding = on && self.pace.get();
        *self.held.borrow_mut() = holding.then(VecDeque::new);
        holding
    }

    /// Submit the held pieces in order, `AHEAD` at a time, calling `step(done, total)` after
    /// each finishes; `false` drops the pieces not yet submitted and fails with `Cancelled`.
    pub(crate) async fn run_pieces(
        &self,
        step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<()> {
        self.flush();
        let pieces: Vec<wgpu::CommandBuffer> = match self.held.borrow_mut().as_mut() {
            Some(h) => h.drain(..).collect(),
            None => return Ok(()),
        };
        let total = pieces.len();
        let mut rest = pieces.into_iter();
        let mut waiting = VecDeque::new();
        for cb in rest.by_ref().take(AHEAD) {
            waiting.push_back(self.submit_piece(cb));
        }
        let mut done = 0;
        while let Some(w) = waiting.pop_front() {
            w.await;
            self.take_error()?;
            done += 1;
            if !step(done, total) {
                return Err(Error::Cancelled);
            }
            if let Some(cb) = rest.next() {
                waiting.push_back(self.submit_piece(cb));
            }
        }
        Ok(())
    }

    /// Submit one piece; the future resolves when the queue has finished it.
    fn submit_piece(&self, cb: wgpu::CommandBuffer) -> Done {
        let index = self.ctx.queue.submit([cb]);
        let state: Arc<Mutex<DoneState>> = Arc::default();
        let st = state.clone();
        self.ctx.queue.on_submitted_work_done(move || {
            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
            s.done = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        Done {
            state,
            #[cfg(not(target_arch = "wasm32"))]
            wait: Some((self.ctx.device.clone(), index)),
        }
    }
}

#[derive(Default)]
struct DoneState {
    done: bool,
    waker: Option<std::task::Waker>,
}

/// Resolves when a submission has finished: on the web when the browser says so; natively by
/// waiting for it on the first poll.
struct Done {
    state: Arc<Mutex<DoneState>>,
    /// Natively: the device to wait on and the submission, until the first poll waits.
    #[cfg(not(target_arch = "wasm32"))]
    wait: Option<(wgpu::Device, wgpu::SubmissionIndex)>,
}

impl std::future::Future for Done {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // `Done` is Unpin: its fields may be reached directly.
        let this = self.get_mut();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some((device, index)) = this.wait.take() {
            // A failed wait is a lost device; the next readback reports it.
            let _ = device.poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            });
        }
        let mut s = this.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            std::task::Poll::Ready(())
        } else {
            s.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }
}
