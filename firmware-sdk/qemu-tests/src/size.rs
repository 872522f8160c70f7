//! How much flash and RAM a firmware image takes, read from its ELF.
//!
//! `arm-none-eabi-size` and `cargo size` are not on every machine; the ELF's section
//! headers say the same thing. Flash is what the image loads into `FLASH` (vector
//! table, code, read-only data, and the initial values of `.data`); static RAM is
//! `.data`, `.bss` and `.uninit` (the heap's reservation included). The stack takes
//! what is left of RAM, and the heap's high-water mark comes from running the image.

use object::{Object, ObjectSection, SectionKind};

/// The flash budget.
pub const FLASH_BUDGET: u64 = 640 * 1024;
/// The RAM budget.
pub const RAM_BUDGET: u64 = 256 * 1024;
/// Where RAM starts on mps2-an386 (see `boards/mps2-an386/memory.x`).
pub const RAM_ORIGIN: u64 = 0x2000_0000;

/// The sizes of one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// `.vector_table` + `.text`.
    pub text: u64,
    /// `.rodata`.
    pub rodata: u64,
    /// `.data` (in flash as initial values, in RAM as variables).
    pub data: u64,
    /// `.bss` + `.uninit` (the heap's reservation included).
    pub bss: u64,
}

impl Sizes {
    /// Bytes of flash.
    pub fn flash(&self) -> u64 {
        self.text + self.rodata + self.data
    }

    /// Bytes of static RAM.
    pub fn static_ram(&self) -> u64 {
        self.data + self.bss
    }
}

/// Reads the sizes of an ELF image.
pub fn measure(elf: &[u8]) -> Result<Sizes, object::Error> {
    let file = object::File::parse(elf)?;
    let mut sizes = Sizes::default();
    for section in file.sections() {
        let loaded = matches!(
            section.kind(),
            SectionKind::Text
                | SectionKind::Data
                | SectionKind::ReadOnlyData
                | SectionKind::ReadOnlyString
                | SectionKind::ReadOnlyDataWithRel
                | SectionKind::UninitializedData
        );
        if !loaded || section.size() == 0 {
            continue;
        }
        let name = section.name().unwrap_or_default();
        let in_ram = section.address() >= RAM_ORIGIN;
        let slot = match name {
            ".data" => &mut sizes.data,
            ".bss" | ".uninit" => &mut sizes.bss,
            ".rodata" => &mut sizes.rodata,
            _ if in_ram => &mut sizes.bss,
            _ => &mut sizes.text,
        };
        *slot += section.size();
    }
    Ok(sizes)
}
