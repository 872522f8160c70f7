//! Milestone 4: every firmware image fits the budget (640 KiB flash, 256 KiB RAM), and
//! what the agent costs to run.
//!
//! Flash and static RAM come from the ELF; the heap's high-water mark from running the
//! images. The agent image runs one `hello` job against the fleet's broker under
//! `-icount shift=0`, where QEMU's virtual clock advances one nanosecond per guest
//! instruction: SysTick's milliseconds are then millions of instructions, the same on
//! every run, which gives a cycle-free (the DWT counter is not emulated) but repeatable
//! figure for accepting an envelope and running a job. The table is printed with
//! `--nocapture`; `memory.x` makes the linker enforce the same budget, so this test is
//! the readable report, not the only guard. The `slicing` image prints what running a
//! job in fuel slices (as the agent does, to serve its link meanwhile) costs against
//! running it at once, and fails if the results differ.

use std::time::Duration;

use fleet_firmware_qemu_tests::board::{Board, agent_command};
use fleet_firmware_qemu_tests::fleet::{DEVICE_PASSWORD, Fleet, Received};
use fleet_firmware_qemu_tests::provision::{golden_device, write_flash};
use fleet_firmware_qemu_tests::size::{FLASH_BUDGET, RAM_BUDGET, flash_by_crate, measure};
use fleet_firmware_qemu_tests::{field, firmware, qemu_command, run_to_end, scratch_dir};
use fleet_schemas::EventKind;

/// Runs `hello` on the agent image with a deterministic instruction clock; returns the
/// heap peak line and the instruction figures.
fn agent_run() -> (String, String) {
    let dir = scratch_dir("sizes-agent");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let mut command = agent_command(&firmware("agent"), &dir, fleet.port);
    command.args(["-icount", "shift=0"]);
    let mut board = Board::start(command);
    assert!(fleet.wait_until(Duration::from_secs(60), fleet_firmware_qemu_tests::fleet::ready), "{board}");
    let envelope = fleet.envelope(Fleet::job(1, fleet_example_jobs::HELLO, &[], 0));
    let envelope_len = envelope.len();
    fleet.send_job(envelope);
    let done = |r: &[Received]| {
        r.iter().any(|r| matches!(r, Received::Event(e, _) if matches!(e.kind, EventKind::Succeeded(_))))
    };
    assert!(fleet.wait_until(Duration::from_secs(120), done), "{board}");
    assert!(board.wait_for("heap: peak", Duration::from_secs(10)), "{board}");
    board.kill();

    let console = board.console();
    let ms = |line: &str| -> String {
        line.split(" in ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or("?").to_string()
    };
    let accept = console.lines().find(|l| l.contains("message on fleet/devices/gw-001/jobs handled")).map(ms);
    let run = console.lines().find(|l| l.starts_with("job: succeeded")).map(ms);
    let figures = format!(
        "agent, instructions (QEMU -icount shift=0, millions, +-1):\n  \
         accept a {envelope_len} byte envelope with hello inline (verify, journal, sign Accepted and Started): {}\n  \
         run hello on wasmi (validate, translate, instantiate, run): {}",
        accept.unwrap_or_else(|| "?".into()),
        run.unwrap_or_else(|| "?".into()),
    );
    (board.last_field("heap: peak").unwrap_or_else(|| "?".into()), figures)
}

#[test]
fn images_fit_the_budget() {
    let mut report = String::from("image     flash(text+rodata+data)  static RAM(data+bss, heap incl.)  heap peak\n");
    let mut figures = String::new();
    let mut slicing = String::new();
    let mut by_crate = String::new();
    for image in ["golden", "flash", "agent", "slicing"] {
        let elf = firmware(image);
        let bytes = std::fs::read(&elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
        let sizes = measure(&bytes).unwrap_or_else(|e| panic!("cannot parse {}: {e}", elf.display()));
        let peak = if image == "agent" {
            let (peak, agent_figures) = agent_run();
            figures = agent_figures;
            peak
        } else {
            let mut command = qemu_command(&elf, &scratch_dir(image), "null");
            command.args(["-icount", "shift=0"]);
            let run = run_to_end(command, Duration::from_secs(120));
            assert!(run.passed(), "{run}");
            if image == "slicing" {
                slicing =
                    run.stdout.lines().filter(|l| l.starts_with("slicing: s")).map(|l| format!("  {l}\n")).collect();
            }
            field(&run.stdout, "heap: peak").unwrap_or("-").to_string()
        };
        report += &format!(
            "{image:<9} {:>7} B ({:>5.1}% of {} KiB)  {:>7} B ({:>5.1}% of {} KiB)  {peak}\n",
            sizes.flash(),
            100.0 * sizes.flash() as f64 / FLASH_BUDGET as f64,
            FLASH_BUDGET / 1024,
            sizes.static_ram(),
            100.0 * sizes.static_ram() as f64 / RAM_BUDGET as f64,
            RAM_BUDGET / 1024,
        );
        if image == "agent" {
            let rows = flash_by_crate(&bytes).unwrap_or_else(|e| panic!("cannot read the symbols: {e}"));
            let mut table = String::from("agent flash by crate (symbols; generics count where they are defined):\n");
            let (unnamed, named) = rows.split_last().unwrap_or_else(|| panic!("no symbols"));
            for (name, size) in named.iter().take(16).chain([unnamed]) {
                table += &format!("  {name:<22} {size:>7} B ({:>4.1}%)\n", 100.0 * *size as f64 / sizes.flash() as f64);
            }
            let rest: u64 = named.iter().skip(16).map(|(_, s)| s).sum();
            table += &format!("  {:<22} {rest:>7} B ({} more crates)\n", "(the rest)", named.len().saturating_sub(16));
            by_crate = table;
        }
        assert!(sizes.flash() <= FLASH_BUDGET, "{image} is over the flash budget:\n{report}");
        assert!(sizes.static_ram() <= RAM_BUDGET, "{image} is over the RAM budget:\n{report}");
    }
    eprintln!(
        "{report}{figures}\n{by_crate}slicing, instructions (QEMU -icount shift=0, millions; same output and fuel in every run):\n{slicing}"
    );
}
