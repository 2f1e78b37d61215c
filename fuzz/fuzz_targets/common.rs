//! Shared by the targets that take several files in one input.
#![allow(dead_code)]

/// Separates the files of a multi-file input (`fuzz/make_seeds` writes seeds this way).
pub const SEP: &[u8] = b"\n--8<--\n";

/// Split `data` at the first `n - 1` separators; the last part takes the rest. Fewer parts when
/// fewer separators are present.
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A short text with ASCII, digits, punctuation, spaces, a newline and non-ASCII letters, to
/// encode with every tokenizer that loads.
pub const TEXT: &str = "Hello world, 123!\n  naïve café – 日本語 <s></s>";

/// libFuzzer's -malloc_limit_mb needs a sanitizer's malloc hooks, which a `-s none` build does
/// not have (only -rss_limit_mb works there), so every target bounds each single allocation
/// itself: over `MAX_ALLOC` bytes aborts, and libFuzzer keeps the input as a crash. The inputs
/// are a few KB, so no parser should ever ask for this much.
pub const MAX_ALLOC: usize = 256 << 20;

pub struct LimitAlloc;

fn check(size: usize) {
    if size > MAX_ALLOC {
        use std::io::Write;
        let _ = std::io::stderr().write_all(b"fuzz: single allocation over MAX_ALLOC\n");
        std::process::abort();
    }
}

unsafe impl std::alloc::GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        check(l.size());
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        check(l.size());
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        check(new);
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: LimitAlloc = LimitAlloc;
