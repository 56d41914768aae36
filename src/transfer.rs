//! `hookd store export` and `hookd store import`: a store's whole content as JSON lines, to
//! move it between engines (sled ↔ PostgreSQL) or machines. The first line is a header
//! (`{"hookd_export": 1, ...}`); every other line is one [`Portable`] record: signing keys,
//! subscriptions created through the API, subscription states, the audit log, then each
//! event followed by its deliveries (with their attempts). Deliveries in flight are exported
//! as due.

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::store::{DeliveryState, Portable, Store};

/// The export format's version.
pub const FORMAT: u64 = 1;
/// Events read from the store per page.
const PAGE: usize = 500;

/// What an export or an import moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub pending: u64,
    pub finished: u64,
    pub subscriptions: u64,
    pub other: u64,
}

impl Summary {
    fn count(&mut self, record: &Portable) {
        match record {
            Portable::Event { .. } => self.events += 1,
            Portable::Delivery { state, .. } => match state {
                DeliveryState::Delivered | DeliveryState::Dead => self.finished += 1,
                _ => self.pending += 1,
            },
            Portable::Subscription(_) => self.subscriptions += 1,
            Portable::Key { .. } | Portable::State { .. } | Portable::Audit(_) => self.other += 1,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events, {} deliveries ({} unfinished, {} finished), {} subscriptions created through the API",
            self.events,
            self.pending + self.finished,
            self.pending,
            self.finished,
            self.subscriptions
        )
    }
}

/// Writes the whole store to `out`; `progress` is called after each page.
pub async fn export(
    store: &dyn Store,
    engine: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&Summary),
) -> anyhow::Result<Summary> {
    let header = serde_json::json!({ "hookd_export": FORMAT, "engine": engine, "version": env!("CARGO_PKG_VERSION") });
    writeln!(out, "{header}")?;
    let mut summary = Summary::default();
    let mut cursor = None;
    loop {
        let (records, next) = store.export(cursor, PAGE).await?;
        for record in &records {
            summary.count(record);
            serde_json::to_writer(&mut *out, record)?;
            out.write_all(b"\n")?;
        }
        progress(&summary);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Reads an export into `store`, which must be empty.
pub async fn import(
    store: &dyn Store,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(&Summary),
) -> anyhow::Result<Summary> {
    let (events, deliveries) = store.counts().await?;
    if events + deliveries > 0 || !store.stored_subscriptions().await?.is_empty() {
        bail!("the target store is not empty ({events} events, {deliveries} deliveries): import into a new store");
    }
    let mut lines = input.lines();
    let header: Value = match lines.next() {
        Some(line) => serde_json::from_str(&line?).context("line 1: not an export header")?,
        None => bail!("the input is empty"),
    };
    match header.get("hookd_export").and_then(Value::as_u64) {
        Some(FORMAT) => {}
        Some(v) => bail!("export format {v}: this hookd reads format {FORMAT}"),
        None => bail!("line 1 is not a hookd export header"),
    }
    let mut summary = Summary::default();
    let mut batch: Vec<Portable> = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Portable = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not an export record", n + 2))?;
        // A batch ends before an event, so that an event and its deliveries go in together.
        if matches!(record, Portable::Event { .. }) && batch.len() >= PAGE {
            store.import(std::mem::take(&mut batch)).await?;
            progress(&summary);
        }
        summary.count(&record);
        batch.push(record);
    }
    if !batch.is_empty() {
        store.import(batch).await?;
    }
    progress(&summary);
    Ok(summary)
}
