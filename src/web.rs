//! (stub) the only #[wasm_bindgen] file
