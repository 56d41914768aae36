//! What a refused file is told: each problem with its file, line, column and key
//! ([`Diagnostic`]), and reading the TOML so that every key of the wrong name or type is
//! reported at once, not only the first.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use super::raw::RawConfig;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Parses `text` into [`RawConfig`]; `file` names it in errors.
///
/// A syntax error is reported alone. Otherwise every key that is unknown or of the wrong type
/// is reported: after each such error the key's lines are set aside and the file is read
/// again. The errors found that way come back with what was read, for the validator to add
/// its own to.
pub(super) fn read_raw(
    text: &str,
    file: &str,
) -> Result<(RawConfig, Vec<Diagnostic>), ConfigError> {
    if let Err(e) = text.parse::<toml::Table>() {
        let span = e.span().unwrap_or(0..0);
        let syntax = diagnostic(text, file, span, None, e.message());
        return Err(ConfigError::Invalid(vec![syntax]));
    }
    let mut working = text.to_string();
    let mut errors = Vec::new();
    loop {
        let e = match toml::from_str(&working) {
            Ok(raw) => return Ok((raw, errors)),
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        let header = starts_on_header(&working, span.start);
        // An error on a table header (a missing field) after lines were set aside is most
        // likely caused by the setting aside: stop there.
        if !errors.is_empty() && header {
            return Err(invalid(errors));
        }
        errors.push(diagnostic(text, file, span.clone(), None, e.message()));
        if span.is_empty() || header || errors.len() >= 50 || !blank_lines(&mut working, span) {
            return Err(invalid(errors));
        }
    }
}

/// The refusal of a file with `errors`, in the order of the file.
pub(super) fn invalid(mut errors: Vec<Diagnostic>) -> ConfigError {
    errors.sort_by_key(|d| (d.line, d.column));
    ConfigError::Invalid(errors)
}

/// Whether the line holding byte `at` is a table header (`[x]` or `[[x]]`).
fn starts_on_header(text: &str, at: usize) -> bool {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..].trim_start().starts_with('[')
}

/// Replaces the whole lines that `span` touches with spaces (line breaks stay, so later spans
/// keep their line numbers). Returns false when there was nothing left to blank.
fn blank_lines(text: &mut String, span: Range<usize>) -> bool {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    if blanked == text[start..end] {
        return false;
    }
    text.replace_range(start..end, &blanked);
    true
}

/// Turns a byte span into a line/column diagnostic, naming the key written on that line.
pub(super) fn diagnostic(
    text: &str,
    file: &str,
    span: Range<usize>,
    key: Option<&str>,
    message: &str,
) -> Diagnostic {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let key = key.map(str::to_string).unwrap_or_else(|| {
        let line_text = text[line_start..].lines().next().unwrap_or("");
        match line_text.split_once('=') {
            Some((k, _)) => match table_path(&text[..line_start]) {
                Some(table) => format!("{table}.{}", k.trim()),
                None => k.trim().to_string(),
            },
            None => line_text.trim().to_string(),
        }
    });
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        key,
        message: message.trim().to_string(),
    }
}

/// The table that the text after `before` is in, named as validation errors name keys:
/// `delivery`, or `subscription[2]` for the third `[[subscription]]`.
fn table_path(before: &str) -> Option<String> {
    let mut current = None;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in before.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            current = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = Some(name.trim().to_string());
        }
    }
    current
}
