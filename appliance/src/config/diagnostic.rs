//! Configuration errors with their place in the file, rendered like a compiler's.

use std::fmt;
use std::ops::Range;

/// One mistake in a configuration file: where, what, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Byte range in the file, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A mistake at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            span: Some(span),
            message: message.into(),
            help: None,
        }
    }

    /// Adds what to write instead.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The message with its fix, on one line (for errors raised after validation, without a position).
    pub fn summary(&self) -> String {
        match &self.help {
            Some(help) => format!("{} ({help})", self.message),
            None => self.message.clone(),
        }
    }

    /// A syntax or type error from the TOML parser, with a fix where the error is a common one.
    pub(super) fn from_toml(e: &toml::de::Error) -> Self {
        let message = e.message().trim().to_string();
        let help = if let Some(rest) = message.strip_prefix("unknown field `") {
            let unknown = rest.split('`').next().unwrap_or_default();
            let expected: Vec<&str> = message
                .split("expected ")
                .nth(1)
                .map(|list| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            match closest(unknown, &expected) {
                Some(better) => Some(format!("write `{better}` instead of `{unknown}`")),
                None => Some(format!(
                    "remove `{unknown}`; the keys allowed here are listed above"
                )),
            }
        } else if message.starts_with("missing field") {
            Some(
                "add the field to this table; docs/install.md lists every key with an example"
                    .to_string(),
            )
        } else {
            None
        };
        Diagnostic {
            span: e.span(),
            message,
            help,
        }
    }
}

/// The allowed name nearest to `word` by edit distance, if it is near enough to be a typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) || c.starts_with(word) || word.starts_with(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {reason}")]
    Unreadable {
        /// The path given.
        path: String,
        /// The OS's reason.
        reason: String,
    },
    /// The file has mistakes; `Display` renders them all with line, column and the offending line.
    #[error("{}", render(origin, text, diagnostics))]
    Invalid {
        /// The file's name.
        origin: String,
        /// The file's text.
        text: String,
        /// Every mistake found.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The mistakes with their 1-based line and column, for tests and tools.
    pub fn positions(&self) -> Vec<(usize, usize, String)> {
        match self {
            ConfigError::Unreadable { reason, .. } => vec![(0, 0, reason.clone())],
            ConfigError::Invalid {
                text, diagnostics, ..
            } => diagnostics
                .iter()
                .map(|d| {
                    let (line, col) = d.span.as_ref().map_or((0, 0), |s| line_col(text, s.start));
                    (line, col, d.message.clone())
                })
                .collect(),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..floor_char_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn render(origin: &str, text: &str, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(
            &DiagnosticView {
                origin,
                text,
                diagnostic: d,
            }
            .to_string(),
        );
    }
    if diagnostics.len() > 1 {
        out.push_str(&format!(
            "\n{} mistakes in {origin}; nothing was started",
            diagnostics.len()
        ));
    }
    out
}

/// Warnings about `text` (named `origin`), each with its place and fix, as `validate` prints them.
pub fn render_warnings(origin: &str, text: &str, warnings: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in warnings {
        let place = d.span.as_ref().map_or(String::new(), |s| {
            let (line, col) = line_col(text, s.start);
            format!(":{line}:{col}")
        });
        out.push_str(&format!("{origin}{place}: warning: {}\n", d.message));
        if let Some(help) = &d.help {
            out.push_str(&format!("  help: {help}\n"));
        }
    }
    out
}

struct DiagnosticView<'a> {
    origin: &'a str,
    text: &'a str,
    diagnostic: &'a Diagnostic,
}

impl fmt::Display for DiagnosticView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        let Some(span) = d.span.clone() else {
            write!(f, "{}: {}", self.origin, d.message)?;
            if let Some(help) = &d.help {
                write!(f, "\n  help: {help}")?;
            }
            return Ok(());
        };
        let (line, col) = line_col(self.text, span.start);
        writeln!(f, "{}:{}:{}: {}", self.origin, line, col, d.message)?;
        let source_line = self.text.lines().nth(line - 1).unwrap_or_default();
        let width = line.to_string().len();
        let span_chars = self
            .text
            .get(span.clone())
            .map_or(1, |s| s.lines().next().unwrap_or(s).chars().count());
        writeln!(f, "{:width$} |", "")?;
        writeln!(f, "{line} | {source_line}")?;
        write!(
            f,
            "{:width$} | {}{}",
            "",
            " ".repeat(col - 1),
            "^".repeat(span_chars.max(1))
        )?;
        if let Some(help) = &d.help {
            write!(f, "\n{:width$} = help: {help}", "")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_suggestions() {
        assert_eq!(line_col("a = 1\nbaudrate = 2", 6), (2, 1));
        assert_eq!(line_col("x = \"é\"\ny", 9), (2, 1));
        assert_eq!(
            closest("baudrate", &["name", "baud", "backend"]),
            Some("baud")
        );
        assert_eq!(closest("zzzz", &["name", "baud"]), None);
    }
}
