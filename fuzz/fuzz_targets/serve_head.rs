//! HTTP request heads of `quantlab serve`: the head parser, then what the server does with a
//! parsed head before touching the file system (Host check, target → path resolution). Must
//! hold: no panic, a refused head is 400/431/close, a resolved path stays relative and free of
//! `..` components.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use quantlab::serve::{host_allowed, parse_head, resolve, MAX_HEAD};
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Err(status) => {
            assert!(matches!(status, 0 | 400 | 431), "status {status}");
            if status == 431 {
                assert!(data.len() > MAX_HEAD);
            }
        }
        Ok((_method, target, _http10, host)) => {
            if let Some(h) = host {
                let _ = host_allowed(&h, "127.0.0.1:8080".parse().unwrap());
                let _ = host_allowed(&h, "[::1]:8080".parse().unwrap());
            }
            if let Some(p) = resolve(&target) {
                for c in p.components() {
                    assert!(
                        matches!(c, Component::Normal(_)),
                        "{target:?} resolved to {p:?}"
                    );
                }
            }
        }
    }
});
