//! Logging: tracing with `RUST_LOG`-style filtering, as text or JSON lines. Under systemd
//! (`$JOURNAL_STREAM` set, text format) lines carry no timestamp of their own (journald stamps
//! them) and start with the `<N>` syslog priority journald reads.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Prefixes each line with its syslog priority, for journald.
struct JournalPriority<F>(F);

/// The `sd-daemon(3)` priority of a level.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // journald reads each line as an entry of its own: a message that spans lines (a
        // config error lists one problem a line) carries the priority on every line.
        let prefix = format!("<{}>", priority(event.metadata().level()));
        for part in line.split_inclusive('\n') {
            writer.write_str(&prefix)?;
            writer.write_str(part)?;
        }
        Ok(())
    }
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`); logs go to stderr,
/// coloured only when it is a terminal.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The PostgreSQL driver logs every statement's parameters at debug: secrets among them.
    // Whatever RUST_LOG asks, it says no more than info.
    let filter = match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match (format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(JournalPriority(inner))
                .try_init()
        }
        // Colours only for a person at a terminal: a file, a pipe or a log shipper gets plain
        // text, and so does anyone who sets NO_COLOR (https://no-color.org).
        (LogFormat::Text, false) => builder.with_ansi(colours_wanted()).try_init(),
    };
    // A second init (in tests) keeps the first subscriber.
    drop(result);
}

/// Whether text logs get ANSI colours: only when stderr is a terminal and `NO_COLOR` is unset
/// or empty.
fn colours_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels_map_to_syslog_priorities() {
        use tracing::Level;
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(super::priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }
}
