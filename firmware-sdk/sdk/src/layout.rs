//! Where things live in the firmware's flash region.
//!
//! Two partitions, each erased and written on its own: the **config block**, written
//! once by provisioning (`fleetctl device provision`, or a host tool before flashing)
//! and only read by the firmware; and the **store**, which the firmware rewrites as it
//! runs. Keeping them apart means a store that wears out or is wiped never takes the
//! device's identity with it.

use core::ops::Range;

/// The partitions of the firmware's flash region (offsets within the region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The config block.
    pub config: Range<u32>,
    /// The key-value store: whole erase pages, at least two.
    pub store: Range<u32>,
}

impl Layout {
    /// One erase page of config followed by `store_pages` pages of store.
    pub const fn new(erase_size: u32, store_pages: u32) -> Self {
        Self { config: 0..erase_size, store: erase_size..erase_size * (1 + store_pages) }
    }

    /// The bytes of flash the layout covers.
    pub const fn len(&self) -> u32 {
        self.store.end
    }

    /// Whether the layout covers nothing.
    pub const fn is_empty(&self) -> bool {
        self.store.end == 0
    }
}
