//! The summary table printed after a run of the scenarios.
//!
//! Why a table of its own: "47 passed" says the suite is green, not what it proved. A
//! reader of the CI log should see, per scenario, how big the fleet was, what was done to
//! it, and how many results the controller recorded against how many were expected.

/// One scenario's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// The scenario.
    pub scenario: String,
    /// The fleet: `8 (8 linux)`.
    pub devices: String,
    /// What was injected: `3 links cut mid-job`.
    pub faults: String,
    /// The results expected: `8 succeeded`.
    pub expected: String,
    /// The results the controller recorded.
    pub recorded: String,
    /// `ok`, `FAILED` or `ignored: why`.
    pub outcome: String,
    /// How long it took, in seconds.
    pub seconds: u64,
}

/// Renders rows as an aligned text table.
pub fn render(rows: &[Row]) -> String {
    let header = ["SCENARIO", "DEVICES", "FAULTS INJECTED", "RESULTS EXPECTED", "RESULTS RECORDED", "OUTCOME", "TIME"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.devices.clone(),
                r.faults.clone(),
                r.expected.clone(),
                r.recorded.clone(),
                r.outcome.clone(),
                format!("{}s", r.seconds),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(&header.map(String::from));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let rows = vec![Row {
            scenario: "1 mixed fleet".into(),
            devices: "8".into(),
            faults: "none".into(),
            expected: "8 succeeded".into(),
            recorded: "8 succeeded".into(),
            outcome: "ok".into(),
            seconds: 12,
        }];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("DEVICES"), lines[1].find("8 "));
    }
}
