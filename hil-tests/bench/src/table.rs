//! The result table: one row per figure, printed as it is measured and again, as a
//! Markdown table, at the end.

/// One figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// Our value, with its unit.
    pub ours: String,
    /// The peer's value, or `-`.
    pub peer: String,
    /// How ours compares (`-` when there is no peer).
    pub ratio: String,
    /// Sizes, settings, and what the peer is.
    pub conditions: String,
}

/// The rows so far.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row and prints it at once (a long run shows its progress).
    pub fn add(&mut self, row: Row) {
        println!("{} | ours {} | peer {} | ratio {} | {}", row.figure, row.ours, row.peer, row.ratio, row.conditions);
        self.rows.push(row);
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table in Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| figure | ours | peer | ratio | conditions |\n|---|---|---|---|---|\n");
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                row.figure, row.ours, row.peer, row.ratio, row.conditions
            ));
        }
        out
    }
}

/// A row without a peer.
pub fn alone(figure: impl Into<String>, ours: impl Into<String>, conditions: impl Into<String>) -> Row {
    Row { figure: figure.into(), ours: ours.into(), peer: "-".into(), ratio: "-".into(), conditions: conditions.into() }
}

/// "2.3x faster" or "1.4x slower": how a smaller-is-better `ours` compares to `peer`.
pub fn time_ratio(ours: f64, peer: f64) -> String {
    if ours <= 0.0 || peer <= 0.0 {
        "-".into()
    } else if ours <= peer {
        format!("{:.1}x faster", peer / ours)
    } else {
        format!("{:.1}x slower", ours / peer)
    }
}

/// The same for a bigger-is-better figure (a rate).
pub fn rate_ratio(ours: f64, peer: f64) -> String {
    time_ratio(peer, ours)
}

/// "1.2x more" or "2.0x less": how much memory (or bytes) `ours` takes beside `peer`.
pub fn size_ratio(ours: f64, peer: f64) -> String {
    if ours <= 0.0 || peer <= 0.0 {
        "-".into()
    } else if ours >= peer {
        format!("{:.1}x more", ours / peer)
    } else {
        format!("{:.1}x less", peer / ours)
    }
}

/// Milliseconds, with sensible precision.
pub fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.0} ms") }
}

/// Microseconds or milliseconds.
pub fn us(seconds: f64) -> String {
    let us = seconds * 1e6;
    if us < 1_000.0 { format!("{us:.1} µs") } else { format!("{:.2} ms", us / 1_000.0) }
}

/// A per-second rate, thousands separated.
pub fn per_second(rate: f64, unit: &str) -> String {
    format!("{} {unit}/s", thousands(rate.round() as u64))
}

/// 12345 → "12,345".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as KiB or MiB.
pub fn size(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

/// The machine, in a few words: CPU model, cores, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    format!("{model}, {cores} cores, {mem_gib:.0} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_which_way() {
        assert_eq!(time_ratio(1.0, 2.0), "2.0x faster");
        assert_eq!(time_ratio(3.0, 1.0), "3.0x slower");
        assert_eq!(rate_ratio(200.0, 100.0), "2.0x faster");
        assert_eq!(time_ratio(0.0, 1.0), "-");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
