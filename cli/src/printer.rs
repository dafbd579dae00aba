//! One printer for a command's answer on stdout: JSON with `-o json` (one value per line for a
//! list, one indented document for one object), else the human form, with tables laid out here
//! and colours only on a terminal without `NO_COLOR` (`env_vars::colors`). Diagnostics go to
//! stderr through `diagnostics`, not here.

use std::fmt::{Display, Write as _};
use std::io::IsTerminal;

use serde::Serialize;

use crate::cli::OutputFormat;
use sparkwing_engine::env_vars;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    json: bool,
    color: bool,
}

impl Printer {
    /// For `-o`/`--output`; colours when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn new(output: OutputFormat) -> Printer {
        Printer::json_if(output == OutputFormat::Json)
    }

    pub fn json_if(json: bool) -> Printer {
        Printer {
            json,
            color: !json && env_vars::colors(std::io::stdout().is_terminal()),
        }
    }

    /// `-o json`.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The human form may be coloured.
    pub fn color(&self) -> bool {
        self.color
    }

    /// One JSON value on one line: an item of a list (JSON lines) or a one-line answer.
    pub fn json_line(&self, v: &impl Serialize) {
        println!("{}", serde_json::to_string(v).unwrap_or_default());
    }

    /// One JSON document, indented.
    pub fn json_document(&self, v: &impl Serialize) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }

    /// One line of the human form.
    pub fn line(&self, line: impl Display) {
        println!("{line}");
    }

    /// One row of `table`: `cells` has one cell per column, then the last, unpadded one.
    pub fn row(&self, table: &[Column], cells: &[&dyn Display]) {
        println!("{}", row(table, cells));
    }

    /// The rows under a job of `runs status` (a local run's, and `--profile`'s from the API) for
    /// its outputs (masked as stored): `output KEY=VALUE` each, in key order, after an empty cell
    /// of the job column; a value's control characters (a newline) are escaped so each output
    /// keeps one row.
    pub fn job_outputs(&self, job_column: Column, outputs: Option<&serde_json::Value>) {
        for line in job_output_rows(job_column, outputs) {
            println!("{line}");
        }
    }
}

fn job_output_rows(job_column: Column, outputs: Option<&serde_json::Value>) -> Vec<String> {
    let Some(outputs) = outputs.and_then(serde_json::Value::as_object) else {
        return Vec::new();
    };
    outputs
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut shown = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    shown.extend(c.escape_default());
                } else {
                    shown.push(c);
                }
            }
            row(&[job_column], &[&"", &format_args!("output {k}={shown}")])
        })
        .collect()
}

/// A padded column of a table, and what separates it from the next.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    width: usize,
    right: bool,
    gap: &'static str,
}

impl Column {
    pub const fn left(width: usize) -> Column {
        Column {
            width,
            right: false,
            gap: " ",
        }
    }

    pub const fn right(width: usize) -> Column {
        Column {
            width,
            right: true,
            gap: " ",
        }
    }

    /// Two spaces before the next column (one by default).
    pub const fn wide_gap(self) -> Column {
        Column { gap: "  ", ..self }
    }
}

fn row(table: &[Column], cells: &[&dyn Display]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let _ = match table.get(i) {
            Some(c) if c.right => write!(out, "{:>w$}{}", cell.to_string(), c.gap, w = c.width),
            Some(c) => write!(out, "{:<w$}{}", cell.to_string(), c.gap, w = c.width),
            None => write!(out, "{cell}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_pad_like_format_width() {
        let table = [Column::left(6), Column::right(4).wide_gap()];
        assert_eq!(row(&table, &[&"ab", &7, &"rest"]), "ab        7  rest");
        // A cell wider than its column is not cut.
        assert_eq!(row(&table, &[&"abcdefgh", &12345, &""]), "abcdefgh 12345  ");
        assert_eq!(
            row(&table, &[&"x", &"y", &"z"]),
            format!("{:<6} {:>4}  {}", "x", "y", "z")
        );
    }

    #[test]
    fn a_jobs_outputs_are_one_row_each_in_key_order() {
        let outputs = serde_json::json!({"version": "1.2.3", "key": "***\n", "tab": "a\tb"});
        assert_eq!(
            job_output_rows(Column::left(4), Some(&outputs)),
            [
                "     output key=***\\n",
                "     output tab=a\\tb",
                "     output version=1.2.3"
            ]
        );
        assert!(job_output_rows(Column::left(4), None).is_empty());
        assert!(job_output_rows(Column::left(4), Some(&serde_json::Value::Null)).is_empty());
    }
}
