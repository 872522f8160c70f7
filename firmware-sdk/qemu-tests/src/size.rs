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

/// The bytes an image's symbols take in flash, by the crate that defines them, largest
/// first; what no symbol covers (string literals, tables the compiler merged, padding)
/// is the last entry, `(no symbol)`.
///
/// A generic function is counted under the crate that defines it, not the one that
/// instantiated it: the agent shell's async state machines, inlined into the executor's
/// `block_on`, count as `embassy_futures`.
pub fn flash_by_crate(elf: &[u8]) -> Result<Vec<(String, u64)>, object::Error> {
    use object::ObjectSymbol;
    let file = object::File::parse(elf)?;
    let sizes = measure(elf)?;
    let mut by_crate: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for symbol in file.symbols() {
        let in_flash = symbol.address() < RAM_ORIGIN && symbol.size() > 0;
        if !in_flash || !matches!(symbol.kind(), object::SymbolKind::Text | object::SymbolKind::Data) {
            continue;
        }
        let name = symbol.name().unwrap_or_default();
        *by_crate.entry(crate_of(name)).or_default() += symbol.size();
    }
    let named: u64 = by_crate.values().sum();
    let mut rows: Vec<(String, u64)> = by_crate.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.push(("(no symbol)".into(), sizes.flash().saturating_sub(named)));
    Ok(rows)
}

/// The crate of a symbol, from its Rust mangling: legacy (`_ZN5wasmi6module...`, or
/// `_ZN61_$LT$wasmi_ir..op..Op$u20$as...` for a trait impl: the implementing type's
/// crate; a blanket impl over `&T` or `Box<T>` counts as `core`), or v0 as the
/// precompiled `core`, `alloc` and `compiler_builtins` use (`_RNvNtCs..._4core3str...`);
/// `(anonymous constants)` for literals the compiler named `.Lanon...` (string and
/// table constants: their crate is not in the name); `(outlined code)` for what LLVM's
/// machine outliner (opt-level "z") moved out of functions of any crate to share it;
/// `(other)` for what is not Rust
/// (the vector table, intrinsics written in assembly).
fn crate_of(symbol: &str) -> String {
    if symbol.starts_with(".L") {
        return "(anonymous constants)".into();
    }
    if symbol.starts_with("OUTLINED_FUNCTION") {
        return "(outlined code)".into();
    }
    if let Some(v0) = symbol.strip_prefix("_R") {
        return crate_of_v0(v0).unwrap_or_else(|| "(other)".into());
    }
    let Some(rest) = symbol.strip_prefix("_ZN") else { return "(other)".into() };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Ok(len) = rest[..digits].parse::<usize>() else { return "(other)".into() };
    let Some(first) = rest.get(digits..digits + len) else { return "(other)".into() };
    let first = first.trim_start_matches('_').trim_start_matches("$LT$");
    let first = first.strip_prefix("impl$u20$").unwrap_or(first);
    let first = first.trim_start_matches("$RF$").trim_start_matches("dyn$u20$");
    let end = first.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(first.len());
    match &first[..end] {
        "" => "(other)".into(),
        "T" => "core".into(),
        name => name.to_string(),
    }
}

/// The first crate root in a v0-mangled path: `Cs` (or `C`), a disambiguator ending in
/// `_`, then the crate's name as `<len><name>`.
fn crate_of_v0(symbol: &str) -> Option<String> {
    let at = symbol.find('C')?;
    let after = &symbol[at + 1..];
    let after = match after.strip_prefix('s') {
        Some(hashed) => &hashed[hashed.find('_')? + 1..],
        None => after,
    };
    let digits = after.chars().take_while(char::is_ascii_digit).count();
    let len: usize = after[..digits].parse().ok()?;
    after.get(digits..digits + len).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::crate_of;

    #[test]
    fn the_crate_of_a_symbol_is_its_first_path_segment() {
        assert_eq!(crate_of("_ZN5wasmi6module11instantiate17hd21019675c19fd28E"), "wasmi");
        assert_eq!(
            crate_of("_ZN61_$LT$wasmi_ir..op..Op$u20$as$u20$wasmi_ir..encode..Encode$GT$6encode17hE"),
            "wasmi_ir"
        );
        assert_eq!(crate_of("_ZN4core3fmt5write17h0E"), "core");
        assert_eq!(crate_of("_ZN50_$LT$$RF$T$u20$as$u20$core..fmt..Debug$GT$3fmt17hE"), "core");
        assert_eq!(crate_of("_RNvNtCs7ldSeZOOJos_4core3str19slice_error_fail_rt"), "core");
        assert_eq!(crate_of("_RNvNtNtCs7NhdfSRABLd_17compiler_builtins3mem7memmove"), "compiler_builtins");
        assert_eq!(crate_of("__aeabi_memcpy"), "(other)");
        assert_eq!(crate_of(".Lanon.88b94e7312261267.184"), "(anonymous constants)");
        assert_eq!(crate_of("OUTLINED_FUNCTION_412"), "(outlined code)");
        assert_eq!(crate_of("_ZNbroken"), "(other)");
    }
}
