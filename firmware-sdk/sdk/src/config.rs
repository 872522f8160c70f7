//! The config block: the device's provisioned identity and settings in flash.
//!
//! `fleet_schemas::provision::DeviceConfig` is the one secret a device holds (its
//! signing seed, its broker password). The firmware reads it from its own erase page
//! ([`crate::layout::Layout::config`]), written by provisioning and never by the
//! firmware, in this form (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FLTC` |
//! | 2 | block format, [`BLOCK_FORMAT`] |
//! | 2 | reserved, 0 |
//! | 4 | payload length |
//! | 4 | CRC-32 (ISO-HDLC) of the payload |
//! | n | payload: the postcard encoding of `DeviceConfig` |
//!
//! The length and checksum make a half-written or worn block a typed error
//! ([`ConfigError`]) instead of a garbled identity, and the length is checked against
//! the page before anything is allocated.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use embedded_storage_async::nor_flash::ReadNorFlash;
use fleet_schemas::provision::{CONFIG_VERSION, DeviceConfig};

/// The config block's format.
pub use fleet_schemas::provision::CONFIG_BLOCK_FORMAT as BLOCK_FORMAT;
/// The header's size in bytes.
pub use fleet_schemas::provision::CONFIG_BLOCK_HEADER_LEN as HEADER_LEN;
/// The magic that opens a config block.
pub use fleet_schemas::provision::CONFIG_BLOCK_MAGIC as MAGIC;

use fleet_schemas::provision::CONFIG_BLOCK_CRC as CRC;

/// Why no config could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The block is erased: the device was never provisioned.
    #[error("no config block: the device is not provisioned")]
    NotProvisioned,
    /// The block does not start with the magic: something else is written there.
    #[error("the config page holds something other than a config block")]
    BadMagic,
    /// The block's format is one this firmware does not read.
    #[error("config block format {0} is not supported (this firmware reads {BLOCK_FORMAT})")]
    UnsupportedFormat(u16),
    /// The payload does not fit the page.
    #[error("config payload of {len} bytes does not fit the {max} byte page")]
    TooLarge {
        /// The length the header claims.
        len: usize,
        /// The most the page holds.
        max: usize,
    },
    /// The payload's checksum does not match: a torn or worn write.
    #[error("config block checksum mismatch")]
    Checksum,
    /// The payload is not a `DeviceConfig`.
    #[error("config payload does not decode")]
    Decode,
    /// The config is of a version this firmware does not read.
    #[error("config version {0} is not supported")]
    UnsupportedVersion(u16),
    /// Reading the flash failed.
    #[error("flash read failed")]
    Flash,
}

/// Encodes a config block (header and payload), ready to write at the start of the
/// config partition.
pub fn encode_block(config: &DeviceConfig) -> Result<Vec<u8>, ConfigError> {
    // The one encoder `fleetctl device provision --kind mcu` uses too.
    fleet_schemas::provision::config_block(config).map_err(|_| ConfigError::Decode)
}

/// Reads and checks the config block in `range` of `flash`.
pub async fn read_config<F: ReadNorFlash>(flash: &mut F, range: Range<u32>) -> Result<DeviceConfig, ConfigError> {
    let page = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| ConfigError::Flash)?;
    let mut header = [0u8; HEADER_LEN];
    flash.read(range.start, &mut header).await.map_err(|_| ConfigError::Flash)?;
    let (magic, rest) = header.split_at(4);
    if magic == [0xff; 4] {
        return Err(ConfigError::NotProvisioned);
    }
    if magic != MAGIC {
        return Err(ConfigError::BadMagic);
    }
    let field = |at: usize| -> [u8; 4] { [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]] };
    let format = u16::from_le_bytes([rest[0], rest[1]]);
    if format != BLOCK_FORMAT {
        return Err(ConfigError::UnsupportedFormat(format));
    }
    let len = usize::try_from(u32::from_le_bytes(field(4))).map_err(|_| ConfigError::Flash)?;
    let max = page.saturating_sub(HEADER_LEN);
    if len > max {
        return Err(ConfigError::TooLarge { len, max });
    }
    let crc = u32::from_le_bytes(field(8));
    // Reads must be whole multiples of the flash's read size.
    let read_len = len.div_ceil(F::READ_SIZE.max(1)) * F::READ_SIZE.max(1);
    let mut payload = vec![0u8; read_len.min(max)];
    flash.read(range.start + HEADER_LEN as u32, &mut payload).await.map_err(|_| ConfigError::Flash)?;
    let payload = payload.get(..len).ok_or(ConfigError::TooLarge { len, max })?;
    if CRC.checksum(payload) != crc {
        return Err(ConfigError::Checksum);
    }
    let config: DeviceConfig = postcard::from_bytes(payload).map_err(|_| ConfigError::Decode)?;
    if config.version != CONFIG_VERSION {
        return Err(ConfigError::UnsupportedVersion(config.version));
    }
    Ok(config)
}
