//! Output for people (aligned tables, ages, sizes) and parsing of the command line's
//! small languages (durations, rates).

use std::time::Duration;

/// An aligned text table, printed like `ps` or `kubectl get`.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, cell) in cells.iter().enumerate() {
                if i == last {
                    out.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    out.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push('\n');
        };
        line(self.headers.clone(), &mut out);
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect(), &mut out);
        }
        out
    }
}

/// "3s ago", "5m ago", "2h ago", "4d ago"; "-" for none.
pub fn age(at_ms: Option<u64>, now_ms: u64) -> String {
    let Some(at) = at_ms else { return "-".to_string() };
    let secs = now_ms.saturating_sub(at) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// A byte count for people: "512 B", "12.3 KiB", "1.5 MiB".
pub fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration; try 30s, 5m or 500ms"))?;
    let ms = match unit.trim() {
        "ms" => Some(number),
        "" | "s" => number.checked_mul(1000),
        "m" | "min" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    };
    ms.map(Duration::from_millis).ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Parses a rate in devices per minute: `10/min`, `10/m`, `10`.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches("/min").trim_end_matches("/m");
    match number.parse::<u32>() {
        Ok(0) => Err("a rate of 0 would never send anything; leave --rate out for no limit".to_string()),
        Ok(rate) => Ok(rate),
        Err(_) => Err(format!("`{text}` is not a rate; try 10/min")),
    }
}

/// Parses a percentage 0 to 100.
pub fn parse_pct(text: &str) -> Result<u8, String> {
    match text.trim().trim_end_matches('%').parse::<u8>() {
        Ok(pct) if pct <= 100 => Ok(pct),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

/// Bytes as text when they are printable UTF-8, hex otherwise.
pub fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => text.to_string(),
        _ => format!("0x{}", hex::encode(bytes)),
    }
}
