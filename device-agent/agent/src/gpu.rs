//! GPU detection, run once at start and reported in the device's capabilities and its
//! retained status (`gpu: none | {vendor, model, memory}`).
//!
//! Why the kernel's DRM sysfs and not a vendor library: it names every GPU the kernel
//! drives (NVIDIA, AMD, Intel, others) the same way, needs no driver SDK linked into the
//! agent, and a gateway without a GPU pays one directory listing. Each card under
//! `/sys/class/drm/cardN/device` has its PCI `vendor` and `device` ids; the model and
//! memory come from what each driver adds: AMD's `product_name` and
//! `mem_info_vram_total`, NVIDIA's `/proc/driver/nvidia/gpus/*/information`, and
//! `nvidia-smi` for NVIDIA's memory when it is installed. What cannot be read is left
//! generic (`pci 10de:2330`, memory 0) rather than guessed. Only NVIDIA, AMD and Intel
//! cards count: the other vendors the kernel lists on servers and virtual machines are
//! display adapters (a BMC's ASPEED, virtio-gpu), which run no jobs.
//!
//! A device without a GPU refuses jobs that *require* one (`Unsupported::GpuRequired`,
//! in the agent core) and runs jobs that merely *prefer* one on the CPU.

use std::path::Path;
use std::process::Command;

use fleet_schemas::status::GpuInfo;

/// The GPU this machine offers jobs, if any: the first one the kernel lists.
pub fn detect() -> Option<GpuInfo> {
    let mut gpu = detect_in(Path::new("/sys/class/drm"), Path::new("/proc/driver/nvidia/gpus"))?;
    if gpu.vendor == "nvidia" && gpu.memory == 0 {
        gpu.memory = nvidia_smi_memory().unwrap_or(0);
    }
    Some(gpu)
}

/// [`detect`] over these directories (the tests give it a tree of their own).
pub fn detect_in(drm: &Path, nvidia_proc: &Path) -> Option<GpuInfo> {
    let mut cards: Vec<_> = std::fs::read_dir(drm)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        // `card0` is a GPU; `card0-HDMI-A-1` is one of its connectors.
        .filter(|name| {
            name.strip_prefix("card").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    cards.sort();
    cards.into_iter().find_map(|card| describe(&drm.join(card).join("device"), nvidia_proc))
}

fn describe(device: &Path, nvidia_proc: &Path) -> Option<GpuInfo> {
    let vendor_id = read_hex(&device.join("vendor"))?;
    let device_id = read_hex(&device.join("device")).unwrap_or(0);
    let generic = format!("pci {vendor_id:04x}:{device_id:04x}");
    let (vendor, model, memory) = match vendor_id {
        0x10de => ("nvidia", nvidia_model(nvidia_proc), 0),
        0x1002 => (
            "amd",
            read_trimmed(&device.join("product_name")),
            read_trimmed(&device.join("mem_info_vram_total")).and_then(|m| m.parse().ok()).unwrap_or(0),
        ),
        0x8086 => ("intel", None, 0),
        // Display adapters that compute nothing: a server's BMC (ASPEED, Matrox), a
        // virtual machine's (virtio, QEMU, VMware, Cirrus). Not a GPU for jobs.
        _ => return None,
    };
    Some(GpuInfo { vendor: vendor.to_string(), model: model.unwrap_or(generic), memory })
}

/// The first GPU's model from the NVIDIA driver's `information` file (`Model: ...`).
fn nvidia_model(proc_dir: &Path) -> Option<String> {
    let mut gpus: Vec<_> = std::fs::read_dir(proc_dir).ok()?.filter_map(Result::ok).map(|e| e.path()).collect();
    gpus.sort();
    gpus.iter().find_map(|gpu| {
        let text = std::fs::read_to_string(gpu.join("information")).ok()?;
        text.lines().find_map(|line| line.strip_prefix("Model:").map(|m| m.trim().to_string()))
    })
}

/// Total memory of the first NVIDIA GPU, in bytes, from `nvidia-smi` (MiB).
fn nvidia_smi_memory() -> Option<u64> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    parse_nvidia_smi_mib(&String::from_utf8_lossy(&out.stdout))
}

/// The first line of `nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits`
/// (MiB) in bytes.
pub fn parse_nvidia_smi_mib(text: &str) -> Option<u64> {
    let mib: u64 = text.lines().next()?.trim().parse().ok()?;
    mib.checked_mul(1024 * 1024)
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `0x10de` (as sysfs writes PCI ids).
fn read_hex(path: &Path) -> Option<u32> {
    let text = read_trimmed(path)?;
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A sysfs-shaped tree: `drm/cardN/device/{files}` and the NVIDIA proc files. The
    /// real files need the hardware; their layout is the kernel's and the driver's.
    fn tree(cards: &[(&str, &[(&str, &str)])], nvidia: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (card, files) in cards {
            let device = dir.path().join("drm").join(card).join("device");
            std::fs::create_dir_all(&device).unwrap();
            for (name, text) in *files {
                std::fs::write(device.join(name), text).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("drm")).unwrap();
        for (i, information) in nvidia.iter().enumerate() {
            let gpu = dir.path().join("nvidia").join(format!("0000:{i:02x}:00.0"));
            std::fs::create_dir_all(&gpu).unwrap();
            std::fs::write(gpu.join("information"), information).unwrap();
        }
        dir
    }

    fn detect_tree(dir: &tempfile::TempDir) -> Option<GpuInfo> {
        detect_in(&dir.path().join("drm"), &dir.path().join("nvidia"))
    }

    #[test]
    fn no_card_is_no_gpu() {
        assert_eq!(detect_tree(&tree(&[], &[])), None);
        assert_eq!(detect_in(Path::new("/nonexistent/drm"), Path::new("/nonexistent")), None);
    }

    #[test]
    fn an_nvidia_card_is_named_by_its_driver() {
        let dir = tree(
            &[("card1", &[("vendor", "0x10de\n"), ("device", "0x2330\n")]), ("card1-DP-1", &[])],
            &["Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   42\n"],
        );
        let gpu = detect_tree(&dir).unwrap();
        assert_eq!((gpu.vendor.as_str(), gpu.model.as_str(), gpu.memory), ("nvidia", "NVIDIA H100 80GB HBM3", 0));
    }

    #[test]
    fn an_amd_card_reports_its_product_and_memory() {
        let files: &[(&str, &str)] = &[
            ("vendor", "0x1002"),
            ("device", "0x744c"),
            ("product_name", "Radeon RX 7900 XTX\n"),
            ("mem_info_vram_total", "25753026560\n"),
        ];
        let gpu = detect_tree(&tree(&[("card0", files)], &[])).unwrap();
        assert_eq!(
            (gpu.vendor.as_str(), gpu.model.as_str(), gpu.memory),
            ("amd", "Radeon RX 7900 XTX", 25_753_026_560)
        );
    }

    #[test]
    fn what_cannot_be_read_stays_generic() {
        // An NVIDIA card without the proprietary driver's proc files (nouveau): the PCI
        // ids, memory unknown.
        let gpu = detect_tree(&tree(&[("card0", &[("vendor", "0x10de"), ("device", "0x1eb8")])], &[])).unwrap();
        assert_eq!((gpu.vendor.as_str(), gpu.model.as_str(), gpu.memory), ("nvidia", "pci 10de:1eb8", 0));
        // A card without a vendor file, and a virtual machine's display adapter
        // (virtio-gpu), are no GPU for jobs; the card after them is.
        let dir = tree(
            &[
                ("card0", &[]),
                ("card1", &[("vendor", "0x1af4"), ("device", "0x1050")]),
                ("card2", &[("vendor", "0x8086"), ("device", "0x56a0")]),
            ],
            &[],
        );
        let gpu = detect_tree(&dir).unwrap();
        assert_eq!((gpu.vendor.as_str(), gpu.model.as_str()), ("intel", "pci 8086:56a0"));
        let server = tree(&[("card0", &[("vendor", "0x1a03"), ("device", "0x2000")])], &[]);
        assert_eq!(detect_tree(&server), None, "an ASPEED BMC is not a GPU");
    }

    #[test]
    fn nvidia_smi_memory_is_mib() {
        assert_eq!(parse_nvidia_smi_mib("81559\n"), Some(81_559 * 1024 * 1024));
        assert_eq!(parse_nvidia_smi_mib("[N/A]\n"), None);
        assert_eq!(parse_nvidia_smi_mib(""), None);
    }
}
