//! The memory cap, shared by both backends' resource limiters.
//!
//! Why it remembers a refusal: a refused `memory.grow` returns -1 to the job, which is
//! not an error by itself (a careful job can cope). What usually follows is an
//! allocator giving up and the job trapping or returning an error code; reported as
//! a plain trap that would hide the cause. So the executor reports any failure that
//! follows a refused growth as `FailReason::OutOfMemory` (see `outcome`).

/// Tables may not grow past this many elements (function tables of real jobs are small).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

#[derive(Debug, Clone)]
pub(crate) struct MemoryCap {
    pub(crate) max_bytes: usize,
    /// Set when a memory growth (or the initial memory) was refused.
    pub(crate) refused: bool,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self { max_bytes, refused: false }
    }

    pub(crate) fn memory_growing(&mut self, desired: usize) -> bool {
        let allowed = desired <= self.max_bytes;
        if !allowed {
            self.refused = true;
        }
        allowed
    }

    pub(crate) fn table_growing(&mut self, desired: usize) -> bool {
        desired <= MAX_TABLE_ELEMENTS
    }
}
