//! Per-dispatch GPU time from timestamp queries (WebGPU's `timestamp-query` feature), so that
//! kernel time on the device can be told apart from the host's recording and submit overhead.
//!
//! While profiling is on, every dispatch is recorded in a compute pass of its own whose
//! beginning and end write timestamps (`ComputePassTimestampWrites`, the portable form; writes
//! between dispatches inside one pass need a native-only feature). Before each submit the used
//! queries are resolved and copied to a mappable buffer; `Gpu::profile_take` maps them all and
//! returns `(label, seconds)` per dispatch. Profiling changes how work is split into passes, so
//! whole-window wall times are measured with it off.

use crate::gpu::buffers;
use crate::{Error, Result};

/// Dispatches timed per submit (two queries each); a full set forces a submit.
pub(crate) const QUERY_PAIRS: u32 = 1024;

pub(crate) struct Profiler {
    pub(crate) set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Labels of the dispatches recorded since the last resolve, in query order.
    pub(crate) labels: Vec<String>,
    /// Resolved batches waiting to be read: (mappable copy of the timestamps, their labels).
    done: Vec<(wgpu::Buffer, Vec<String>)>,
}

impl Profiler {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        Profiler {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * QUERY_PAIRS,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: 16 * QUERY_PAIRS as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            labels: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Index pair for the next dispatch, or None when the set is full (the caller submits).
    pub(crate) fn next(&mut self, label: String) -> Option<(u32, u32)> {
        let i = self.labels.len() as u32;
        if i >= QUERY_PAIRS {
            return None;
        }
        self.labels.push(label);
        Some((2 * i, 2 * i + 1))
    }

    /// Record the resolve of the queries used so far into `enc` (just before it is finished).
    pub(crate) fn resolve(&mut self, device: &wgpu::Device, enc: &mut wgpu::CommandEncoder) {
        let n = self.labels.len() as u32;
        if n == 0 {
            return;
        }
        let bytes = 16 * n as u64;
        enc.resolve_query_set(&self.set, 0..2 * n, &self.resolve, 0);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(&self.resolve, 0, &staging, 0, bytes);
        self.done.push((staging, std::mem::take(&mut self.labels)));
    }

    /// Batches resolved so far (the profiler keeps recording into fresh ones).
    pub(crate) fn take_done(&mut self) -> Vec<(wgpu::Buffer, Vec<String>)> {
        std::mem::take(&mut self.done)
    }
}

/// Map the resolved batches and turn timestamp pairs into seconds with the queue's period.
pub(crate) async fn read_batches(
    device: &wgpu::Device,
    period_ns: f32,
    batches: Vec<(wgpu::Buffer, Vec<String>)>,
) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (buf, labels) in batches {
        let bytes = buffers::read_back(device, &buf).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        if ticks.len() < 2 * labels.len() {
            return Err(Error::unsupported(
                "gpu",
                "profile",
                format!("{} timestamps for {} dispatches", ticks.len(), labels.len()),
            ));
        }
        for (l, t) in labels.into_iter().zip(ticks.chunks_exact(2)) {
            let dt = t[1].saturating_sub(t[0]) as f64 * period_ns as f64 * 1e-9;
            out.push((l, dt));
        }
    }
    Ok(out)
}
