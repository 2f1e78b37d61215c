//! (stub for branch work; replaced by the GGUF helper)
use crate::Result;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    Q8_0,
    Q4_1,
}
impl GgmlType {
    pub fn name(self) -> &'static str {
        "q"
    }
    pub fn block_size(self) -> usize {
        32
    }
    pub fn type_size(self) -> usize {
        34
    }
    pub fn scale_bytes_per_block(self) -> usize {
        2
    }
}
pub fn dequantize(_t: GgmlType, _data: &[u8], _out: &mut [f32]) -> Result<()> {
    Ok(())
}
